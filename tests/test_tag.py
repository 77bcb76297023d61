"""The named_axes tag: jaxpr eqns, StableHLO attributes, compiled HLO, and every JAX transform."""

import collections
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import namax as nx
from namax import Axis
from namax.tag import attribute_text, named_axes_p, tag

Batch, Embed, Hidden = Axis("batch", 4), Axis("embed", 8), Axis("hidden", 16)


def tags_in(jaxpr) -> list:
    """Every named_axes eqn's axes, in order, recursing into sub-jaxprs."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive is named_axes_p:
            out.append(eqn.params["axes"])
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            out.extend(tags_in(sub))
    return out


def rand(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def mlp_params():
    return rand((8, 16), 1), rand((16, 8), 2), rand((4, 8), 3)


def named_mlp_loss(w1, w2, x):
    h = nx.maximum(nx.dot(x, w1, axis=Embed), 0.0)
    out = nx.dot(h, w2, axis=Hidden)
    return nx.sum((out - x) ** 2).array


def plain_mlp_loss(w1, w2, x):
    h = jnp.maximum(x @ w1, 0.0)
    return jnp.sum((h @ w2 - x) ** 2)


def named_args(w1, w2, x):
    return (nx.named(w1, (Embed, Hidden)), nx.named(w2, (Hidden, Embed.alias("out"))),
            nx.named(x, (Batch, Embed)))


def plain_step(w1, w2, x):
    return jax.value_and_grad(plain_mlp_loss, argnums=(0, 1))(w1, w2, x)


def named_mlp_loss_renamed(w1, w2, x):
    """named_mlp_loss with the output renamed back to ``embed``: the exact plain computation."""
    h = nx.maximum(nx.dot(x, w1, axis=Embed), 0.0)
    out = nx.dot(h, w2, axis=Hidden).rename({"out": "embed"})
    return nx.sum((out - x) ** 2).array


def named_step(w1, w2, x):
    return jax.value_and_grad(named_mlp_loss_renamed, argnums=(0, 1))(w1, w2, x)


HLO_OP = re.compile(r"=\s*[^\s=]+\s+([a-z][a-z0-9\-]*)\(")


def op_counts(hlo_text: str) -> collections.Counter:
    return collections.Counter(m.group(1) for line in hlo_text.splitlines() if (m := HLO_OP.search(line)))


def instructions(hlo_text: str) -> list:
    """Sorted instructions without value names, metadata or frontend attributes."""
    out = []
    for line in hlo_text.splitlines():
        if HLO_OP.search(line) and line.lstrip().startswith(("%", "ROOT")):
            line = re.sub(r", (metadata|frontend_attributes)=\{[^}]*\}", "", line)
            out.append(re.sub(r"%[\w.\-]+", "%", line).strip())
    return sorted(out)


# --- the primitive itself -----------------------------------------------------------------


def test_tag_is_identity_eagerly_and_checks_rank():
    x = jnp.asarray(rand((2, 3)))
    np.testing.assert_array_equal(tag(x, ("a", "b")), x)
    np.testing.assert_array_equal(jax.jit(lambda v: tag(v, ("a", None)))(x), x)
    with pytest.raises(ValueError, match=r"tag: 1 names \('a',\) for an array of shape \(2, 3\)"):
        tag(x, ("a",))
    assert attribute_text(("a", None, "b")) == "a,_,b"
    with pytest.raises(TypeError, match=r"non-empty strings or None, got 3"):
        tag(x, ("a", 3))
    from_numpy = tag(rand((2,)), ("a",))
    assert isinstance(from_numpy, jax.Array)


@pytest.mark.parametrize("axis_type", ["Explicit", "Auto"])
def test_tag_on_a_sharded_mesh(axis_type):
    from jax.sharding import AxisType, NamedSharding, PartitionSpec

    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(getattr(AxisType, axis_type),) * 2)
    x = jax.device_put(rand((8, 4)), NamedSharding(mesh, PartitionSpec("data", "model")))
    f = jax.jit(jax.value_and_grad(lambda v: jnp.sum(jnp.sin(tag(v, ("batch", "embed"))))))
    with jax.set_mesh(mesh):
        value, grad = f(x)
        assert 'named_axes = "batch,embed"' in f.lower(x).as_text()
    np.testing.assert_allclose(value, np.sum(np.sin(np.asarray(x))), rtol=1e-5)
    np.testing.assert_allclose(grad, np.cos(np.asarray(x)), rtol=1e-6)
    assert grad.sharding.spec == PartitionSpec("data", "model")


def test_make_jaxpr_shows_named_axes_eqns():
    w1, w2, x = named_args(*mlp_params())
    closed = jax.make_jaxpr(named_mlp_loss)(w1, w2, x)
    assert tags_in(closed.jaxpr) == [("batch", "hidden"), ("batch", "hidden"), ("batch", "out"),
                                     ("batch", "out", "embed"), ("batch", "out", "embed"), ()]
    assert "named_axes[axes=('batch', 'hidden')]" in str(closed)


def test_lowered_stablehlo_carries_frontend_attribute():
    w1, w2, x = named_args(*mlp_params())
    text = jax.jit(named_mlp_loss).lower(w1, w2, x).as_text()
    assert 'named_axes = "batch,hidden"' in text
    assert 'named_axes = "batch,out,embed"' in text
    assert re.search(r'stablehlo\.convert .*mhlo\.frontend_attributes = \{named_axes = "batch,hidden"\}', text)


def test_names_reach_compiled_hlo():
    w1, w2, x = named_args(*mlp_params())
    compiled = jax.jit(named_mlp_loss).lower(w1, w2, x).compile().as_text()
    assert 'named_axes="batch,hidden"' in compiled


def test_optimized_hlo_has_same_ops_as_plain_jnp():
    w1, w2, x = mlp_params()
    plain = jax.jit(plain_step).lower(w1, w2, x).compile().as_text()
    named = jax.jit(named_step).lower(*named_args(w1, w2, x)).compile().as_text()
    assert op_counts(plain) == op_counts(named)
    assert len(instructions(named)) > 10
    assert instructions(plain) == instructions(named)  # the same program up to names and debug info
    assert op_counts(named)["dot"] + op_counts(named)["fusion"] > 0
    assert "named_axes=" in named and "named_axes=" not in plain
    assert "convert(" not in named  # the identity converts are folded away
    # and the same values
    (lp, gp), (ln, gn) = jax.jit(plain_step)(w1, w2, x), jax.jit(named_step)(*named_args(w1, w2, x))
    np.testing.assert_allclose(ln, lp, rtol=1e-5)
    np.testing.assert_allclose(gn[0].array, gp[0], rtol=1e-5)
    np.testing.assert_allclose(gn[1].array, gp[1], rtol=1e-5)


# --- transforms ---------------------------------------------------------------------------


def test_grad_tags_cotangents():
    def f(v):
        return jnp.sum(jnp.sin(tag(v, ("batch", "embed"))))

    x = rand((4, 8))
    fwd = tags_in(jax.make_jaxpr(f)(x).jaxpr)
    bwd = tags_in(jax.make_jaxpr(jax.grad(f))(x).jaxpr)
    assert fwd == [("batch", "embed")]
    assert bwd.count(("batch", "embed")) == 2  # the primal and its cotangent
    np.testing.assert_allclose(jax.grad(f)(x), np.cos(x), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.grad(f))(x), np.cos(x), rtol=1e-6)


def test_grad_of_named_mlp_has_tagged_backward_pass():
    w1, w2, x = named_args(*mlp_params())
    fwd = tags_in(jax.make_jaxpr(named_mlp_loss)(w1, w2, x).jaxpr)
    bwd = tags_in(jax.make_jaxpr(jax.grad(named_mlp_loss, argnums=(0, 1)))(w1, w2, x).jaxpr)
    assert len(bwd) == 2 * len(fwd)


def test_jvp_tags_tangent():
    def f(v):
        return tag(v, ("batch",)) * 3.0

    x, t = rand((4,)), rand((4,), 1)
    y, ty = jax.jvp(f, (x,), (t,))
    np.testing.assert_allclose(y, 3 * x, rtol=1e-6)
    np.testing.assert_allclose(ty, 3 * t, rtol=1e-6)
    assert tags_in(jax.make_jaxpr(lambda a, b: jax.jvp(f, (a,), (b,)))(x, t).jaxpr) == [("batch",)] * 2


def test_linear_transpose():
    def f(v):
        return tag(v, ("batch", "embed")) * 2.0

    x = rand((4, 8))
    transpose = jax.linear_transpose(f, jax.ShapeDtypeStruct(x.shape, x.dtype))
    (ct,) = transpose(jnp.ones_like(x))
    np.testing.assert_allclose(ct, 2 * np.ones_like(x))
    assert tags_in(jax.make_jaxpr(transpose)(x).jaxpr) == [("batch", "embed")]


@pytest.mark.parametrize("in_axes, expected", [(0, ("layer", "embed")), (1, ("embed", "layer"))])
def test_vmap_with_axis_name_names_the_mapped_dim(in_axes, expected):
    f = jax.vmap(lambda v: tag(v, ("embed",)) + 1.0, in_axes=in_axes, out_axes=in_axes, axis_name="layer")
    x = rand((3, 8) if in_axes == 0 else (8, 3))
    np.testing.assert_allclose(f(x), x + 1, rtol=1e-6)
    assert tags_in(jax.make_jaxpr(f)(x).jaxpr) == [expected]
    text = jax.jit(f).lower(x).as_text()
    assert f'named_axes = "{",".join(expected)}"' in text


def test_vmap_without_axis_name_gives_none():
    f = jax.vmap(lambda v: tag(v, ("batch", "embed")))
    x = rand((2, 4, 8))
    assert tags_in(jax.make_jaxpr(f)(x).jaxpr) == [(None, "batch", "embed")]
    assert 'named_axes = "_,batch,embed"' in jax.jit(f).lower(x).as_text()
    unmapped = jax.vmap(lambda v, w: tag(w, ("embed",)) * v, in_axes=(0, None))
    assert ("embed",) in tags_in(jax.make_jaxpr(unmapped)(rand((2,)), rand((8,))).jaxpr)


def test_vmap_of_named_ops_and_grad():
    w = nx.named(rand((8, 16)), (Embed, Hidden))

    def per_example(v):
        return nx.sum(nx.tanh(nx.dot(nx.named(v, (Embed,)), w, axis=Embed))).array

    xs = rand((4, 8), 5)
    out = jax.jit(jax.vmap(jax.grad(per_example), axis_name="batch"))(xs)
    ref = jax.vmap(jax.grad(lambda v: jnp.sum(jnp.tanh(v @ w.array))))(xs)
    np.testing.assert_allclose(out, ref, rtol=1e-5)
    tags = tags_in(jax.make_jaxpr(jax.vmap(per_example, axis_name="batch"))(xs).jaxpr)
    assert ("batch", "hidden") in tags


def test_scan_body_tags_and_grad_through_scan():
    w = rand((8, 8), 6)

    def step(carry, _):
        nxt = nx.tanh(nx.dot(carry, nx.named(w, (Embed, Embed.alias("next"))), axis=Embed))
        return nxt.rename({"next": "embed"}), None

    def loop(x):
        out, _ = jax.lax.scan(step, nx.named(x, (Embed,)), None, length=3)
        return nx.sum(out).array

    def plain(x):
        def body(c, _):
            return jnp.tanh(c @ w), None
        return jnp.sum(jax.lax.scan(body, x, None, length=3)[0])

    x = rand((8,), 7)
    np.testing.assert_allclose(loop(x), plain(x), rtol=1e-5)
    np.testing.assert_allclose(jax.jit(jax.grad(loop))(x), jax.grad(plain)(x), rtol=1e-5)
    closed = jax.make_jaxpr(loop)(x)
    scan_eqn = next(e for e in closed.jaxpr.eqns if e.primitive.name == "scan")
    assert ("next",) in tags_in(scan_eqn.params["jaxpr"].jaxpr)
    assert 'named_axes = "next"' in jax.jit(loop).lower(x).as_text()
