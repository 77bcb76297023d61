"""Reductions and scans over named axes against NumPy/jnp references; jit, where= masks, grads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

import namax as nx
from namax import Axis, NamedArray

B, P, E = Axis("batch", 2), Axis("position", 3), Axis("embed", 4)
AXES = (B, P, E)


def rand(axes, seed=0):
    shape = tuple(a.size for a in axes)
    return nx.named(np.random.default_rng(seed).normal(size=shape).astype(np.float32), axes)


def by_name(x: NamedArray, axes) -> np.ndarray:
    return np.asarray(jnp.transpose(x.array, [x.axis_index(a) for a in axes]))


REDUCTIONS = {
    "sum": jnp.sum, "mean": jnp.mean, "max": jnp.max, "min": jnp.min, "prod": jnp.prod,
    "std": jnp.std, "var": jnp.var, "logsumexp": jax.nn.logsumexp,
}
SELECTIONS = [E, "position", (B, E), ("embed", P), None, ()]


def positions(axes, sel):
    if sel is None:
        return tuple(range(len(axes)))
    sel = sel if isinstance(sel, tuple) else (sel,)
    names = [a.name for a in axes]
    return tuple(names.index(s if isinstance(s, str) else s.name) for s in sel)


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@pytest.mark.parametrize("sel", SELECTIONS, ids=str)
def test_reductions_match_jnp(name, sel):
    x = rand(AXES)
    dims = positions(AXES, sel)
    ref = REDUCTIONS[name](x.array, axis=dims)
    fn = getattr(nx, name)
    kept = tuple(a for i, a in enumerate(AXES) if i not in dims)
    for out in (fn(x, sel), jax.jit(lambda v: fn(v, sel))(x)):
        assert isinstance(out, NamedArray) and out.axes == kept
        np.testing.assert_allclose(out.array, ref, rtol=1e-5, atol=1e-6)


@given(st.permutations(AXES), st.sampled_from(["sum", "mean", "max", "var", "logsumexp"]),
       st.sampled_from([E, (P, B), None]))
def test_reduction_values_do_not_depend_on_axis_order(order, name, sel):
    base = rand(AXES, seed=1)
    x = base.rearrange(order)
    fn = getattr(nx, name)
    ref = fn(base, sel)
    out = fn(x, sel)
    np.testing.assert_allclose(by_name(out, ref.axes), ref.array, rtol=1e-5)


@pytest.mark.parametrize("name", ["any", "all"])
@pytest.mark.parametrize("sel", [P, (B, E), None])
def test_boolean_reductions(name, sel):
    x = rand(AXES, seed=2) > 0.5
    ref = getattr(jnp, name)(x.array, axis=positions(AXES, sel))
    np.testing.assert_array_equal(getattr(nx, name)(x, sel).array, ref)
    np.testing.assert_array_equal(getattr(x, name)(sel).array, ref)


def test_method_forms_and_keyword_arguments():
    x = rand(AXES, seed=3)
    np.testing.assert_allclose(x.sum(E).array, jnp.sum(x.array, axis=2), rtol=1e-6)
    np.testing.assert_allclose(x.mean().array, jnp.mean(x.array), rtol=1e-6)
    np.testing.assert_allclose(x.std(P, ddof=1).array, jnp.std(x.array, axis=1, ddof=1), rtol=1e-6)
    np.testing.assert_allclose(x.var((B, P)).array, jnp.var(x.array, axis=(0, 1)), rtol=1e-6)
    np.testing.assert_allclose(x.prod(B).array, jnp.prod(x.array, axis=0), rtol=1e-6)
    assert x.max(E).axes == (B, P) and x.min(P).axes == (B, E)
    assert nx.sum(x, E, dtype=jnp.float16).dtype == jnp.float16


@pytest.mark.parametrize("name, extra", [("sum", {}), ("mean", {}), ("max", {"initial": -10.0}),
                                          ("min", {"initial": 10.0}), ("prod", {}), ("var", {}),
                                          ("logsumexp", {})])
@pytest.mark.parametrize("mask_axes", [(B, P, E), (P,), (E, B)], ids=str)
def test_where_mask_broadcast_by_name(name, extra, mask_axes):
    x = rand(AXES, seed=4)
    mask = rand(mask_axes, seed=5) > -0.3
    full_mask = jnp.broadcast_to(
        jnp.expand_dims(by_name(mask, [a for a in AXES if a in mask_axes]),
                        [i for i, a in enumerate(AXES) if a not in mask_axes]), x.array.shape)
    ref = REDUCTIONS[name](x.array, axis=(2,), where=full_mask, **extra)
    out = getattr(nx, name)(x, E, where=mask, **extra)
    assert out.axes == (B, P)
    np.testing.assert_allclose(out.array, ref, rtol=1e-5)
    jitted = jax.jit(lambda v, m: getattr(nx, name)(v, E, where=m, **extra))(x, mask)
    np.testing.assert_allclose(jitted.array, ref, rtol=1e-5)


def test_argmax_argmin():
    x = rand(AXES, seed=6)
    for fn, ref in [(nx.argmax, jnp.argmax), (nx.argmin, jnp.argmin)]:
        out = fn(x, P)
        assert out.axes == (B, E)
        np.testing.assert_array_equal(out.array, ref(x.array, axis=1))
        np.testing.assert_array_equal(jax.jit(lambda v: fn(v, "embed"))(x).array, ref(x.array, axis=2))
        flat = fn(x)
        assert flat.axes == () and int(flat) == int(ref(x.array))
    np.testing.assert_array_equal(x.argmax(B).array, jnp.argmax(x.array, axis=0))
    with pytest.raises(TypeError, match="takes one axis"):
        nx.argmax(x, (B, P))


@pytest.mark.parametrize("name, ref", [
    ("cumsum", jnp.cumsum), ("cumprod", jnp.cumprod), ("cummax", jax.lax.cummax),
    ("cummin", jax.lax.cummin), ("cumlogsumexp", jax.lax.cumlogsumexp), ("sort", jnp.sort),
    ("argsort", jnp.argsort),
])
@pytest.mark.parametrize("axis", [B, "position", E], ids=str)
def test_scans_and_sorts_keep_axes(name, ref, axis):
    x = rand(AXES, seed=7)
    i = positions(AXES, axis)[0]
    expected = ref(x.array, axis=i)
    fn = getattr(nx, name)
    for out in (fn(x, axis), jax.jit(lambda v: fn(v, axis))(x)):
        assert out.axes == AXES
        np.testing.assert_allclose(out.array, expected, rtol=1e-5)


def test_errors_name_the_axis_or_argument():
    x = rand(AXES)
    with pytest.raises(ValueError, match=r"Axis 'head' not found in array with axes \(batch:2, position:3, embed:4\)"):
        nx.sum(x, "head")
    with pytest.raises(ValueError, match="Axis given twice"):
        nx.mean(x, (E, "embed"))
    with pytest.raises(ValueError, match=r"'embed' has size 4 in the array but 5 was given"):
        nx.max(x, E.resize(5))
    with pytest.raises(TypeError, match="sum: expected a NamedArray, got ArrayImpl"):
        nx.sum(x.array, E)
    with pytest.raises(TypeError, match="cumsum: expected a NamedArray"):
        nx.cumsum(x.array, E)
    with pytest.raises(TypeError, match="where= must be a NamedArray"):
        nx.sum(x, E, where=x.array > 0)
    with pytest.raises(ValueError, match=r"align: axis 'position' has size 5 .* but size 3"):
        nx.sum(x, E, where=rand((P.resize(5),)) > 0)
    with pytest.raises(ValueError, match=r"align: axes \['head'\]"):
        nx.sum(x, E, where=rand((Axis("head", 2),)) > 0)


def test_gradients_match_jnp():
    x = rand(AXES, seed=8)

    def named_loss(v):
        return (nx.sum(nx.logsumexp(v, E) * nx.std(v, E)) + nx.max(nx.mean(v, P), None)
                + nx.sum(nx.cumsum(v, P) ** 2) + nx.sum(nx.sort(v, B) * nx.arange(B))).array

    def plain_loss(v):
        return (jnp.sum(jax.nn.logsumexp(v, 2) * jnp.std(v, 2)) + jnp.max(jnp.mean(v, 1))
                + jnp.sum(jnp.cumsum(v, 1) ** 2) + jnp.sum(jnp.sort(v, 0) * jnp.arange(2)[:, None, None]))

    g = jax.jit(jax.grad(named_loss))(x)
    assert g.axes == AXES
    np.testing.assert_allclose(g.array, jax.grad(plain_loss)(x.array), rtol=1e-5, atol=1e-6)
