"""Higher-order functions by axis name: vmap/scan/fold/map against jax.vmap/jax.lax.scan on
the raw arrays (values and gradients), checkpoint policies (what is really saved),
Stacked/BlockSeq, and NamedArray.tree_unflatten's check against positional transforms."""

import contextlib
import io

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.ad_checkpoint import print_saved_residuals
from jax.sharding import PartitionSpec

import namax as nx
import namax.nn as hnn
from namax.infer import infer_names
from named_cases import rand, close, raw

Batch, Embed, Time, Layers = nx.make_axes(batch=3, embed=4, time=5, layers=4)
Mlp = nx.Axis("mlp", 2)


def _perm(data, axes):
    order = data.draw(st.permutations(list(range(len(axes)))))
    return tuple(axes[i] for i in order)


# --- vmap -----------------------------------------------------------------------------------


@settings(max_examples=5)
@given(st.data())
def test_vmap_matches_jax_vmap_wherever_the_axis_sits(data):
    x_axes = _perm(data, (Batch, Embed, Mlp))
    x, w = rand(x_axes, seed=1), rand((Embed,), seed=2)
    scale = jnp.asarray(np.random.default_rng(3).normal(size=(Batch.size,)).astype(np.float32))

    def named_f(x, w, s):
        assert not x.has_axis("batch") and s.shape == ()
        return nx.tanh(x * w) * s, nx.sum(x, "mlp")

    def ref_f(xb, w, s):  # xb: (embed, mlp)
        return jnp.tanh(xb * w[:, None]) * s, xb.sum(1)

    out, summed = nx.vmap(named_f, Batch)(x, w, scale)
    rest = tuple(a for a in x_axes if a != Batch)
    assert out.axes == (Batch,) + rest and summed.axes == (Batch, Embed)
    ref_out, ref_sum = jax.vmap(ref_f, in_axes=(0, None, 0))(raw(x, "batch", "embed", "mlp"), w.array, scale)
    close(raw(out, "batch", "embed", "mlp"), ref_out)
    close(summed.array, ref_sum)

    cot = np.random.default_rng(4).normal(size=ref_out.shape).astype(np.float32)

    def named_loss(xa, wa, s):
        o, _ = nx.vmap(named_f, Batch)(nx.NamedArray(xa, x_axes), nx.NamedArray(wa, (Embed,)), s)
        return jnp.sum(raw(o, "batch", "embed", "mlp") * cot)

    def ref_loss(xa, wa, s):
        return jnp.sum(jax.vmap(ref_f, in_axes=(0, None, 0))(xa, wa, s)[0] * cot)

    g1 = jax.grad(named_loss, argnums=(0, 1, 2))(x.array, w.array, scale)
    g2 = jax.grad(ref_loss, argnums=(0, 1, 2))(raw(x, "batch", "embed", "mlp"), w.array, scale)
    close(nx.NamedArray(g1[0], x_axes).rearrange(("batch", "embed", "mlp")).array, g2[0])
    close(g1[1], g2[1])
    close(g1[2], g2[2])


def test_vmap_unnamed_leaves_follow_haliax_rules():
    x = rand((Batch, Embed), seed=5)
    table = jnp.arange(12.0).reshape(3, 4)  # mapped over dim 0 by default
    bias = jnp.arange(4.0)  # broadcast through args=

    def f(x, table, bias, label, n):
        return x.array + table + bias + n, label

    out, label = nx.vmap(f, Batch, args=(0, 0, None))(x, table, bias, "tag", 2)
    close(out, x.array + table + bias + 2)
    assert label == "tag" and out.shape == (3, 4)  # unnamed output: new leading dim
    # default=None broadcasts every plain array; a callable default decides per leaf
    out2, _ = nx.vmap(f, Batch, default=None, args=(0, 0))(x, table, jnp.arange(4.0), "t", 0)
    close(out2, x.array + table + jnp.arange(4.0))
    out3 = nx.vmap(lambda x, t: x.array + t, Batch, default=lambda leaf: 1 if leaf.ndim == 2 else None)(x, table.T)
    close(out3, x.array + table)
    # kwargs= and a pytree prefix for one argument
    out4 = nx.vmap(lambda x, *, d: x.array + d["a"] + d["b"], Batch, kwargs={"d": {"a": 0, "b": None}})(
        x, d={"a": table, "b": bias})
    close(out4, x.array + table + bias)


def test_vmap_named_argument_without_the_axis_is_broadcast_and_gets_the_axis_name_in_the_jaxpr():
    x, w = rand((Embed, Batch), seed=6), rand((Embed, Mlp), seed=7)
    out = nx.vmap(lambda xi, w: nx.dot(xi, w, axis="embed"), "batch")(x, w)
    assert out.axes == (Batch, Mlp)
    close(out.array, jax.vmap(lambda xb: xb @ w.array, in_axes=1)(x.array))
    text = str(jax.make_jaxpr(lambda a: nx.vmap(lambda r: r * 2, Batch)(nx.NamedArray(a, (Embed, Batch))).array)(
        x.array))
    assert "axes=('embed', 'batch')" in text  # the inner tag is batched with the vmapped name


def test_nested_vmap_and_axis_sequences_match_nested_jax_vmap():
    x = rand((Embed, Batch, Time), seed=8)

    def f(v):  # v: embed
        return nx.sum(nx.sin(v) * v, "embed")

    # outer jax.vmap over batch (dim 1 of embed,batch,time), inner over time: (batch, time)
    ref = jax.vmap(jax.vmap(lambda v: jnp.sum(jnp.sin(v) * v), in_axes=1), in_axes=1)(x.array)
    nested = nx.vmap(nx.vmap(f, "batch"), "time")(x)
    assert nested.axes == (Time, Batch)
    close(nested.array, ref.T)
    seq = nx.vmap(f, (Batch, "time"))(x)
    assert seq.axes == (Batch, Time)
    close(seq.array, ref)
    assert nx.vmap(f, {"batch": 3, "time": None})(x).axes == (Batch, Time)
    gn = jax.grad(lambda a: nx.sum(nx.vmap(nx.vmap(f, "batch"), "time")(nx.NamedArray(a, x.axes))).array)(x.array)
    gr = jax.grad(lambda a: jnp.sum(jnp.sin(a) * a))(x.array)
    close(gn, gr)


def test_vmap_with_an_axis_no_argument_has_calls_n_times():
    out = nx.vmap(lambda w: w * 2.0, Batch)(rand((Embed,), seed=9))
    assert out.axes == (Batch, Embed)
    close(out.array[2], rand((Embed,), seed=9).array * 2.0)


def test_vmap_errors_name_the_axis():
    x = rand((Embed, Batch))
    with pytest.raises(ValueError, match="vmap over 'foo': no argument has the axis 'foo'"):
        nx.vmap(lambda a: a, "foo")(x)
    with pytest.raises(ValueError, match=r"vmap over 'batch': a \(axes \(embed:4, batch:3\)\) has size 3 but the Axis"):
        nx.vmap(lambda a: a, Batch.resize(7))(x)
    with pytest.raises(ValueError, match=r"vmap over 'batch': b \(axes \(batch:2\)\) has size 2 but a"):
        nx.vmap(lambda a, b: a, "batch")(x, nx.ones(Batch.resize(2)))
    with pytest.raises(ValueError, match=r"vmap over 'batch': s is an unnamed array of shape \(\) that cannot be"):
        nx.vmap(lambda a, s: a * s, Batch)(x, jnp.float32(2.0))
    with pytest.raises(ValueError, match=r"vmap over 'batch': t \(shape \(4,\), dimension 0\) has size 4"):
        nx.vmap(lambda a, t: a, Batch)(x, jnp.ones(4))
    with pytest.raises(ValueError, match="already has 'batch'"):
        nx.vmap(lambda a: a.broadcast_axis(Batch), Batch)(x)
    with pytest.raises(ValueError, match="not a prefix"):
        nx.vmap(lambda d: d["a"], Batch, args=({"a": 0, "b": 0},))({"a": jnp.ones(3)})


# --- scan / fold / map ------------------------------------------------------------------------


def _ref_step(h, xt, w, s):  # h: (embed,), xt: (embed,), w: (embed,), s: scalar (per step)
    h = jnp.tanh(h * w + xt) * s
    return h, h.sum()


def _named_step(h, xt, w, s):
    h = nx.tanh(h * w + xt) * s
    return h, nx.sum(h)


@settings(max_examples=5)
@given(st.data(), st.booleans())
def test_scan_matches_lax_scan_wherever_the_axis_sits(data, reverse):
    xs_axes = _perm(data, (Time, Embed))
    xs, w, h0 = rand(xs_axes, seed=10), rand((Embed,), seed=11), rand((Embed,), seed=12)
    s = jnp.asarray(np.random.default_rng(13).uniform(0.5, 1.5, size=(Time.size,)).astype(np.float32))

    h, ys = nx.scan(_named_step, "time", reverse=reverse)(h0, xs, w, s)
    assert h.axes == (Embed,) and ys.axes == (Time,)
    ref_h, ref_ys = jax.lax.scan(lambda c, a: _ref_step(c, a[0], w.array, a[1]), h0.array,
                                 (raw(xs, "time", "embed"), s), reverse=reverse)
    close(h.array, ref_h)
    close(ys.array, ref_ys)

    def named_loss(h0a, xsa, wa, sa):
        hh, yy = nx.scan(_named_step, "time", reverse=reverse)(
            nx.NamedArray(h0a, (Embed,)), nx.NamedArray(xsa, xs_axes), nx.NamedArray(wa, (Embed,)), sa)
        return jnp.sum(hh.array) + jnp.sum(yy.array * jnp.arange(5.0))

    def ref_loss(h0a, xsa, wa, sa):
        hh, yy = jax.lax.scan(lambda c, a: _ref_step(c, a[0], wa, a[1]), h0a, (xsa, sa), reverse=reverse)
        return jnp.sum(hh) + jnp.sum(yy * jnp.arange(5.0))

    g1 = jax.grad(named_loss, argnums=(0, 1, 2, 3))(h0.array, xs.array, w.array, s)
    g2 = jax.grad(ref_loss, argnums=(0, 1, 2, 3))(h0.array, raw(xs, "time", "embed"), w.array, s)
    close(g1[0], g2[0])
    close(nx.NamedArray(g1[1], xs_axes).rearrange(("time", "embed")).array, g2[1])
    close(g1[2], g2[2])
    close(g1[3], g2[3])


def test_scan_outputs_unnamed_leaves_kwargs_and_unroll():
    xs = rand((Embed, Time), seed=14)
    steps = jnp.arange(5.0)

    def step(c, x, k, *, scale, label):
        assert label == "static" and x.axes == (Embed,) and k.shape == ()
        return c + x * scale + k, {"named": x * 2, "plain": k * 3, "none": None}

    c, ys = nx.scan(step, Time, unroll=2)(nx.zeros(Embed), xs, steps, scale=2.0, label="static")
    assert ys["named"].axes == (Time, Embed) and ys["plain"].shape == (5,) and ys["none"] is None
    close(c.array, raw(xs, "embed", "time").sum(1) * 2 + steps.sum())
    close(ys["named"].array, raw(xs, "time", "embed") * 2)
    close(ys["plain"], steps * 3)


def test_fold_and_map_match_lax():
    xs, h0 = rand((Embed, Layers), seed=15), rand((Embed,), seed=16)
    folded = nx.fold(lambda h, x: nx.sin(h) + x, Layers)(h0, xs)
    ref = jax.lax.scan(lambda h, x: (jnp.sin(h) + x, None), h0.array, raw(xs, "layers", "embed"))[0]
    close(folded.array, ref)
    g1 = jax.grad(lambda a: nx.sum(nx.fold(lambda h, x: nx.sin(h) * x, Layers)(h0, nx.NamedArray(a, xs.axes))).array)(
        xs.array)
    g2 = jax.grad(lambda a: jnp.sum(jax.lax.scan(lambda h, x: (jnp.sin(h) * x, None), h0.array, a.T)[0]))(xs.array)
    close(g1, g2)  # both with respect to the (embed, layers) array
    # an Axis with a size and nothing to scan: n steps
    assert float(nx.fold(lambda c: c + 1.0, Layers)(0.0)) == Layers.size
    mapped = nx.map(lambda col, t: nx.sum(col * col, "embed") + t, Layers, reverse=True)(xs, jnp.arange(4.0))
    assert mapped.axes == (Layers,)
    close(mapped.array, jax.lax.map(lambda a: jnp.sum(a[0] ** 2) + a[1], (raw(xs, "layers", "embed"), jnp.arange(4.0))))


def test_scan_errors_name_the_axis():
    xs = rand((Embed, Time))
    ok_step = lambda c, x, *rest: (c, None)  # noqa: E731
    with pytest.raises(ValueError, match=r"scan over 'layers': no argument has the axis 'layers' \(the arguments' "
                                         r"axes: \['embed', 'time'\]\)"):
        nx.scan(ok_step, "layers")(0.0, xs)
    with pytest.raises(ValueError, match=r"scan over 'time': extra \(unnamed, shape \(4,\), scanned over dimension 0\)"
                                         r" has size 4 but xs \(axes \(embed:4, time:5\)\) has size 5"):
        nx.scan(lambda c, xs, extra: (c, None), "time")(0.0, xs, jnp.ones(4))
    with pytest.raises(ValueError, match=r"scan over 'time': x \(axes \(time:3\)\) has size 3 but the Axis"):
        nx.scan(lambda c, x: (c, None), Time)(0.0, nx.ones(Time.resize(3)))
    with pytest.raises(TypeError, match="must return a pair"):
        nx.scan(lambda c, x: c, Time)(0.0, xs)
    with pytest.raises(ValueError, match=r"must return a carry like the one it gets.*NamedArray\(embed:4\)"):
        nx.scan(lambda c, x: (x, None), Time)(0.0, xs)
    with pytest.raises(ValueError, match="already has 'time'"):
        nx.scan(lambda c, x: (c, x.broadcast_axis(Time)), Time)(0.0, xs)
    with pytest.raises(ValueError, match=r"scan over 'time': s is a 0-d array"):
        nx.scan(lambda c, x, s: (c, None), Time, is_scanned=True)(0.0, xs, jnp.float32(1))
    with pytest.raises(ValueError, match=r"nested=2 chunks do not divide the axis size 5"):
        nx.scan(ok_step, Time, remat=nx.ScanCheckpointPolicy(nested=2))(0.0, xs)


# --- checkpoint policies ------------------------------------------------------------------------


def _block(h, w):
    mid = nx.tree_checkpoint_name(nx.tanh(h * w), "mid")
    return nx.sin(mid) * 2.0 + h


def _loss(w, h, remat):
    return nx.sum(nx.fold(_block, Layers, remat=remat)(h, w)).array


def _saved(remat, w, h):
    """Residuals kept for the backward pass: (count, total elements) from jax.vjp, and the printout."""
    _, vjp = jax.vjp(lambda a: _loss(nx.NamedArray(a, w.axes), h, remat), w.array)
    leaves = jax.tree_util.tree_leaves(vjp)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_saved_residuals(lambda a: _loss(nx.NamedArray(a, w.axes), h, remat), w.array)
    assert buf.getvalue().count("\n") == len(leaves)
    return len(leaves), sum(int(np.size(v)) for v in leaves)


def test_remat_policies_change_what_is_saved_not_the_values():
    w, h = rand((Layers, Embed), seed=20), rand((Embed,), seed=21)
    per_layer = Layers.size * Embed.size
    base_val, base_grad = jax.value_and_grad(lambda a: _loss(nx.NamedArray(a, w.axes), h, False))(w.array)
    saved = {}
    policies = {
        "none": False, "simple": True, "recompute": "recompute", "save_all": "save_all", "nested": "nested",
        "mid": nx.ScanCheckpointPolicy(save_block_internals=["mid"]),
        "internals": nx.ScanCheckpointPolicy(save_block_internals=True),
        "no_carries": nx.ScanCheckpointPolicy(save_carries=False),
        "nested2": nx.ScanCheckpointPolicy(nested=2, prevent_cse=True),
    }
    for label, remat in policies.items():
        val, grad = jax.value_and_grad(lambda a: _loss(nx.NamedArray(a, w.axes), h, remat))(w.array)
        close(val, base_val)
        close(grad, base_grad)
        saved[label] = _saved(remat, w, h)
    assert saved["save_all"] == saved["none"] == saved["internals"]
    assert saved["simple"][1] < saved["none"][1]
    # naming "mid" keeps exactly one more stacked value than recomputing it
    assert saved["mid"][1] == saved["simple"][1] + per_layer
    assert saved["recompute"] == saved["no_carries"]
    # nested remat keeps the chunk carries, not one carry per layer
    assert saved["nested"][1] < saved["simple"][1]
    assert saved["nested2"] == saved["nested"]  # 4 layers: nested=True picks 2 chunks


def test_remat_puts_a_checkpoint_in_the_scan_body():
    w, h = rand((Layers, Embed)), rand((Embed,))

    def inner_prims(remat):
        jaxpr = jax.make_jaxpr(lambda a: _loss(nx.NamedArray(a, w.axes), h, remat))(w.array)
        scan = next(e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan")
        return {e.primitive.name for e in scan.params["jaxpr"].jaxpr.eqns}

    assert not {"checkpoint", "remat2", "remat"} & inner_prims(False)
    assert {"checkpoint", "remat2", "remat"} & inner_prims(True)
    assert {"checkpoint", "remat2", "remat"} & inner_prims(nx.ScanCheckpointPolicy(save_inputs=True))


def test_scan_checkpoint_policy_conversions_and_errors():
    P = nx.ScanCheckpointPolicy
    assert P.from_bool_or_str(True) == P(simple=True)
    assert P.from_bool_or_str(False).disable
    assert P.from_bool_or_str("full") == P.from_bool_or_str("recompute") == P(save_carries=False)
    assert P.from_bool_or_str("offload").save_carries == "offload"
    assert P.from_bool_or_str("nested").nested is True
    policy = P(save_block_internals=["a", "b"], offload_block_internals=["c"])
    assert P.from_bool_or_str(policy) is policy
    assert hash(policy) == hash(P(save_block_internals=("a", "b"), offload_block_internals=("c",)))
    assert nx.nn.ScanCheckpointPolicy is P
    with pytest.raises(ValueError, match="Invalid checkpoint policy 'sometimes'"):
        P.from_bool_or_str("sometimes")
    with pytest.raises(ValueError, match="save_carries must be True, False or 'offload'"):
        P(save_carries="yes")
    with pytest.raises(ValueError, match="cannot be combined with offloading"):
        P(save_block_internals=True, offload_block_internals=["x"])
    with pytest.raises(TypeError, match="list of checkpoint names"):
        P(save_block_internals="mid")
    with pytest.raises(ValueError, match="nested must be a bool or an int >= 1"):
        P(nested=0)


def test_tree_checkpoint_name_keeps_axes_and_names_every_array():
    tree = {"h": rand((Embed,)), "p": jnp.ones(2), "n": 3, "s": "x"}
    def named(h, p):
        out = nx.tree_checkpoint_name({**tree, "h": h, "p": p}, "here")
        return out["h"].array, out["p"]

    jaxpr = jax.make_jaxpr(named)(tree["h"], tree["p"])
    names = [e for e in jaxpr.jaxpr.eqns if e.params.get("name") == "here"]
    assert len(names) == 2
    out = nx.tree_checkpoint_name(tree, "here")
    assert out["h"].axes == (Embed,) and out["n"] == 3 and out["s"] == "x"
    close(out["h"].array, tree["h"].array)


# --- names pass -------------------------------------------------------------------------------


def test_names_pass_sees_through_nx_scan():
    xs, h0 = rand((Embed, Time), seed=30), rand((Batch, Embed), seed=31)

    def f(h0, xs):
        h, ys = nx.scan(lambda h, x: (nx.sin(h + x), nx.sum(h, "embed")), "time")(h0, xs)
        return h.array, ys.array

    r = infer_names(f, h0, xs)
    assert r.out_names == [("batch", "embed"), ("time", "batch")]
    sins = r.equations("sin")
    assert sins and all(e.out_names[0] == ("batch", "embed") for e in sins)
    jitted = nx.namedjit(lambda h0, xs: nx.scan(lambda h, x: (nx.sin(h + x), nx.sum(h, "embed")), "time")(h0, xs))
    h, ys = jitted(h0, xs)
    assert h.axes == (Batch, Embed) and ys.axes == (Time, Batch)
    eager = nx.scan(lambda h, x: (nx.sin(h + x), nx.sum(h, "embed")), "time")(h0, xs)
    close(h.array, eager[0].array)
    close(ys.array, eager[1].array)


def test_names_pass_sees_through_nx_vmap():
    x = rand((Embed, Batch), seed=32)
    r = infer_names(lambda x: nx.vmap(lambda r: nx.exp(r), "batch")(x).array, x)
    assert r.out_names == [("batch", "embed")]


# --- Stacked and BlockSeq -------------------------------------------------------------------------


class Block(eqx.Module):
    norm: hnn.LayerNorm
    mlp: hnn.MLP
    scale: jax.Array  # a plain (unnamed) parameter

    @staticmethod
    def init(Embed, Hidden, *, key):
        return Block(hnn.LayerNorm.init(Embed), hnn.MLP.init(Embed, Embed.alias("embed_out"), Hidden, key=key),
                     jnp.ones(()))

    def __call__(self, x, factor=1.0):
        return x + factor * self.scale * self.mlp(self.norm(x)).rename({"embed_out": "embed"})


class ScanBlock(Block):
    @staticmethod
    def init(Embed, Hidden, *, key):
        b = Block.init(Embed, Hidden, key=key)
        return ScanBlock(b.norm, b.mlp, b.scale)

    def __call__(self, x, factor=1.0):
        y = super().__call__(x, factor)
        return y, nx.sum(y, "embed")


def _perturb(tree, seed):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_unflatten(
        treedef, [jnp.asarray(rng.normal(size=v.shape).astype(np.float32)) if hasattr(v, "shape") else v
                  for v in leaves])


def _stack(block=Block, **kw):
    return _perturb(hnn.Stacked.init(Layers, block, **kw)(Embed, Mlp, key=jax.random.key(0)), 3)


def test_stacked_takes_a_checkpoint_policy_with_equal_values_and_gradients():
    x = rand((Batch, Embed), seed=40)
    plain = _stack()
    assert plain.gradient_checkpointing.disable
    ref = jax.value_and_grad(lambda s: jnp.sum(jnp.sin(s(x, 0.5).array)))(plain)
    for spec in [True, "nested"]:
        stack = eqx.tree_at(lambda s: s.stacked, _stack(gradient_checkpointing=spec), plain.stacked)
        assert stack.gradient_checkpointing == nx.ScanCheckpointPolicy.from_bool_or_str(spec)
        val, grad = jax.value_and_grad(lambda s: jnp.sum(jnp.sin(s(x, 0.5).array)))(stack)
        close(val, ref[0], 1e-4)
        for a, b in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(ref[1])):
            close(a, b, 1e-4)
    assert _stack(gradient_checkpointing=True, prevent_cse=True).gradient_checkpointing.prevent_cse
    assert _stack().Block == Layers


def test_stacked_get_layer_unstacked_and_vmap():
    stack, x = _stack(), rand((Batch, Embed), seed=41)
    layers = stack.unstacked()
    assert len(layers) == Layers.size
    for i in (0, 2, -1):
        layer = stack.get_layer(i)
        assert layer.mlp.layers[0].weight.axis_names == ("mlp", "embed")
        close(layer.mlp.layers[0].weight.array, raw(stack.stacked.mlp.layers[0].weight, "layers", "mlp", "embed")[i])
        close(layer.scale, stack.stacked.scale[i])
    with pytest.raises(IndexError, match="index 4 is out of range for axis 'layers' of size 4"):
        stack.get_layer(4)
    out = stack.vmap(x, 0.5)
    assert out.axes == (Layers, Batch, Embed)
    for i, layer in enumerate(layers):
        close(out.array[i], layer(x, 0.5).rearrange(("batch", "embed")).array, 1e-4)
    via = stack.vmap_via(lambda block, x: block(x, 0.5))(x)
    close(via.array, out.array, 1e-5)


def test_stacked_slices_named_arguments_with_the_layers_axis():
    stack, x = _stack(), rand((Batch, Embed), seed=42)
    factors = nx.named(jnp.array([0.5, -1.0, 2.0, 0.25]), Layers)
    y = stack(x, factors)
    ref = x
    for i, layer in enumerate(stack.unstacked()):
        ref = layer(ref, factors.array[i])
    close(y.array, ref.rearrange(("batch", "embed")).array, 1e-4)


def test_stacked_init_accepts_one_key_or_one_key_per_layer():
    k = jax.random.key(7)
    a = hnn.Stacked.init(Layers, Block)(Embed, Mlp, key=k)
    b = hnn.Stacked.init(Layers, Block)(Embed, Mlp, key=jax.random.split(k, Layers.size))
    close(a.stacked.mlp.layers[0].weight.array, b.stacked.mlp.layers[0].weight.array)
    with pytest.raises(ValueError, match=r"key= must be one PRNG key or 4 keys \(one per 'layers' layer\)"):
        hnn.Stacked.init(Layers, Block)(Embed, Mlp, key=jax.random.split(k, 3))


def test_blockseq_matches_stacked_with_the_same_parameters():
    stack, x = _stack(), rand((Batch, Embed), seed=43)
    seq = hnn.BlockSeq(stack.unstacked(), Layers)
    close(seq(x, 0.5).array, stack(x, 0.5).array, 1e-4)
    scan_stack = _stack(ScanBlock)
    c1, o1 = scan_stack.scan(x, 0.5)
    c2, o2 = hnn.BlockSeq(scan_stack.unstacked(), Layers).scan(x, 0.5)
    assert o1.axes == o2.axes == (Layers, Batch)
    close(c1.array, c2.array, 1e-4)
    close(o1.array, o2.array, 1e-4)
    step = lambda block, h: (block(h), nx.sum(h * h, "embed"))  # noqa: E731
    c3, o3 = stack.scan_via(step)(x)
    c4, o4 = seq.scan_via(step)(x)
    close(c3.array, c4.array, 1e-4)
    close(o3.array, o4.array, 1e-4)
    v1, v2 = seq.vmap(x, 0.5), stack.vmap(x, 0.5)
    assert v1.axes == v2.axes == (Layers, Batch, Embed)
    close(v1.array, v2.array, 1e-4)
    assert seq.get_layer(1) is seq.blocks[1]
    # gradients agree (BlockSeq checkpointed per block)
    seq_ckpt = hnn.BlockSeq(stack.unstacked(), Layers, True)
    g_stack = jax.grad(lambda a: jnp.sum(stack.fold(nx.NamedArray(a, x.axes), 0.5).array ** 2))(x.array)
    g_seq = jax.grad(lambda a: jnp.sum(seq_ckpt.fold(nx.NamedArray(a, x.axes), 0.5).array ** 2))(x.array)
    close(g_stack, g_seq, 1e-4)
    # BlockSeq.init with the same key builds the same layers as Stacked.init
    built = hnn.BlockSeq.init(Layers, Block)(Embed, Mlp, key=jax.random.key(0))
    stacked = hnn.Stacked.init(Layers, Block)(Embed, Mlp, key=jax.random.key(0))
    for i in range(Layers.size):
        close(built.blocks[i].mlp.layers[0].weight.array, stacked.get_layer(i).mlp.layers[0].weight.array, 1e-6)
    with pytest.raises(ValueError, match="3 blocks given for axis 'layers' of size 4"):
        hnn.BlockSeq(stack.unstacked()[:3], Layers)


# --- NamedArray.tree_unflatten ----------------------------------------------------------------------


def test_positional_transforms_over_named_arrays_fail_at_once_pointing_to_nx_vmap():
    x = rand((Batch, Embed))
    with pytest.raises(ValueError, match=r"axes \(batch:3, embed:4\) was rebuilt around a value of shape \(4,\).*"
                                         r"nx\.vmap"):
        jax.vmap(lambda v: v)(x)
    with pytest.raises(ValueError, match=r"axes \(batch:3, embed:4\).*nx\.scan"):
        jax.lax.scan(lambda c, v: (c, None), 0.0, x)


def test_tree_utilities_and_transforms_still_work_on_named_arrays():
    x, w = rand((Batch, Embed), seed=50), rand((Embed,), seed=51)
    tree = {"x": x, "w": w}
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    back = jax.tree_util.tree_unflatten(treedef, leaves)
    assert back["x"].axes == x.axes and back["x"].array is x.array
    for filler in (None, object(), PartitionSpec("data"), "s"):
        rebuilt = jax.tree_util.tree_unflatten(treedef, [filler] * len(leaves))
        assert rebuilt["x"].array is filler and rebuilt["x"].axes == x.axes
    specs = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)
    assert specs["x"].axes == x.axes and specs["x"].array.shape == (3, 4)
    shapes = jax.eval_shape(lambda t: t, tree)
    assert shapes["w"].axes == (Embed,)

    def loss(t):
        return nx.sum(nx.tanh(t["x"] * t["w"])).array

    ref = jax.grad(lambda a, b: jnp.sum(jnp.tanh(a * b)), argnums=(0, 1))(x.array, w.array)
    g = jax.grad(loss)(tree)
    assert g["x"].axes == x.axes
    close(g["x"].array, ref[0])
    close(g["w"].array, ref[1])
    close(jax.jit(loss)(tree), loss(tree))
    close(eqx.filter_jit(loss)(tree), loss(tree))
    # lax.scan with NamedArrays in the carry and closed over
    c, ys = jax.lax.scan(lambda c, t: (c * w + t, nx.sum(c).array), x, jnp.arange(3.0))
    ref_c = x.array
    for t in range(3):
        ref_c = ref_c * w.array + t
    assert c.axes == x.axes
    close(c.array, ref_c)


def test_offload_policy_gives_the_same_gradients_under_jit():
    w, h = rand((Layers, Embed), seed=22), rand((Embed,), seed=23)
    ref = jax.grad(lambda a: _loss(nx.NamedArray(a, w.axes), h, False))(w.array)
    for remat in ("offload", nx.ScanCheckpointPolicy(offload_block_internals=["mid"])):
        got = jax.jit(jax.grad(lambda a: _loss(nx.NamedArray(a, w.axes), h, remat)))(w.array)
        close(got, ref)
    with pytest.raises(ValueError, match=r"\['mid'\] are both saved and offloaded"):
        nx.ScanCheckpointPolicy(save_block_internals=["mid"], offload_block_internals=["mid"])


def test_per_leaf_scalar_reductions_rebuild_named_trees():
    """optax's tree utilities map every leaf to a scalar and rebuild the tree (tree_norm,
    clip_by_global_norm): a NamedArray around a 0-d value is allowed, so they work."""
    import optax

    A, B = nx.Axis("a", 3), nx.Axis("b", 4)
    params = {"w": nx.ones((A, B)), "v": nx.arange(A).astype(float)}
    norm = optax.tree_utils.tree_norm(params)
    want = np.sqrt(12.0 + sum(float(v) ** 2 for v in range(3)))
    np.testing.assert_allclose(float(norm), want, rtol=1e-6)
    clipped, _ = optax.clip_by_global_norm(1.0).update(params, optax.EmptyState())
    np.testing.assert_allclose(float(optax.tree_utils.tree_norm(clipped)), 1.0, rtol=1e-5)
    assert clipped["w"].axes == (A, B)
