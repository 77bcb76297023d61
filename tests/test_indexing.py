"""Indexing by name (__getitem__, take, slice, updated_slice) against NumPy / jnp references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

import namax as nx
from namax import Axis

B, P, H, E = Axis("batch", 2), Axis("position", 6), Axis("head", 3), Axis("embed", 4)
V = Axis("vocab", 7)


def rand(axes, seed=0):
    shape = tuple(a.size for a in axes)
    return nx.named(np.random.default_rng(seed).normal(size=shape).astype(np.float32), axes)


def ints(axes, high, seed=0):
    shape = tuple(a.size for a in axes)
    return nx.named(np.random.default_rng(seed).integers(0, high, size=shape).astype(np.int32), axes)


# --- static ints and slices ------------------------------------------------------------------


def test_int_drops_axis():
    x = rand((B, P, E))
    a = np.asarray(x.array)
    y = x["position", 3]
    assert y.axes == (B, E)
    np.testing.assert_array_equal(y.array, a[:, 3, :])
    np.testing.assert_array_equal(x["position", -1].array, a[:, -1, :])
    np.testing.assert_array_equal(x[P, np.int64(2)].array, a[:, 2, :])


@given(st.integers(-8, 8) | st.none(), st.integers(-8, 8) | st.none(), st.sampled_from([None, 1, 2, -1, -2]))
def test_slices_match_numpy(start, stop, step):
    x = rand((B, P, E))
    s = slice(start, stop, step)
    ref = np.asarray(x.array)[:, s, :]
    y = x["position", s]
    assert y.axes == (B, Axis("position", ref.shape[1]), E)
    np.testing.assert_array_equal(y.array, ref)


def test_several_pairs_and_dict():
    x = rand((B, P, H, E))
    a = np.asarray(x.array)
    y = x["head", 0, "position", 1:5:2]
    assert y.axes == (B, Axis("position", 2), E)
    np.testing.assert_array_equal(y.array, a[:, 1:5:2, 0, :])
    z = x[{"head": 2, "position": slice(1, 3), "batch": 1}]
    assert z.axes == (Axis("position", 2), E)
    np.testing.assert_array_equal(z.array, a[1, 1:3, 2, :])


def test_static_indexing_under_jit():
    x = rand((B, P, E))
    y = jax.jit(lambda x: x["position", 1:4, "embed", 2])(x)
    np.testing.assert_array_equal(y.array, np.asarray(x.array)[:, 1:4, 2])


# --- dynamic scalars and dslice --------------------------------------------------------------


def test_traced_scalar_index_under_jit():
    x = rand((B, P, E))
    f = jax.jit(lambda x, i: x["position", i])
    for i in (0, 4, -1):
        y = f(x, jnp.int32(i))
        assert y.axes == (B, E)
        np.testing.assert_array_equal(y.array, np.asarray(x.array)[:, i, :])
    # out of range under jit: the fill value (NaN), never a real row; mode="clip" clamps on request
    assert np.isnan(np.asarray(f(x, jnp.int32(99)).array)).all()
    clipped = jax.jit(lambda x, i: nx.index(x, {"position": i}, mode="clip"))(x, jnp.int32(99))
    np.testing.assert_array_equal(clipped.array, np.asarray(x.array)[:, -1, :])


def test_dslice_traced_start():
    x = rand((B, P))
    f = jax.jit(lambda x, i: x["position", nx.ds(i, 3)])
    y = f(x, jnp.int32(2))
    assert y.axes == (B, Axis("position", 3))
    np.testing.assert_array_equal(y.array, np.asarray(x.array)[:, 2:5])
    # past the end under jit: the positions outside read NaN (was: clamped to [3:6]); mode="clip" clamps
    past = np.asarray(f(x, jnp.int32(5)).array)
    np.testing.assert_array_equal(past[:, 0], np.asarray(x.array)[:, 5])
    assert np.isnan(past[:, 1:]).all()
    g = jax.jit(lambda x, i: nx.index(x, {"position": nx.ds(i, 3)}, mode="clip"))
    np.testing.assert_array_equal(g(x, jnp.int32(5)).array, np.asarray(x.array)[:, 3:6])


# --- advanced indexing with NamedArrays ------------------------------------------------------


def test_embedding_lookup():
    Pos = Axis("position", 5)
    w = rand((V, E))
    ids = ints((B, Pos), V.size)
    for y in (w["vocab", ids], jax.jit(lambda w, ids: w["vocab", ids])(w, ids), nx.take(w, "vocab", ids)):
        assert y.axes == (B, Pos, E)
        np.testing.assert_array_equal(y.array, np.asarray(w.array)[np.asarray(ids.array)])


def test_index_array_replaces_axis_in_place():
    x = rand((H, V, E))
    Sel = Axis("sel", 4)
    ids = ints((Sel,), V.size, 1)
    y = x["vocab", ids]
    assert y.axes == (H, Sel, E)
    np.testing.assert_array_equal(y.array, np.asarray(x.array)[:, np.asarray(ids.array), :])


def test_shared_axes_are_matched_like_take_along_axis():
    logp = rand((B, P, V))
    targets = ints((B, P), V.size, 2)
    y = logp["vocab", targets]
    assert y.axes == (B, P)
    ref = np.take_along_axis(np.asarray(logp.array), np.asarray(targets.array)[:, :, None], axis=-1)[:, :, 0]
    np.testing.assert_array_equal(y.array, ref)
    # index axes in another order than the array's
    y2 = logp["vocab", nx.rearrange(targets, ("position", "batch"))]
    np.testing.assert_array_equal(nx.rearrange(y2, ("batch", "position")).array, ref)


def test_two_index_arrays_broadcast_by_name():
    x = rand((H, V, E))
    I, J = Axis("i", 3), Axis("j", 2)
    hi, vi = ints((I,), H.size, 3), ints((J,), V.size, 4)
    y = x["head", hi, "vocab", vi]
    assert y.axes == (I, J, E)
    ref = np.asarray(x.array)[np.asarray(hi.array)[:, None], np.asarray(vi.array)[None, :], :]
    np.testing.assert_array_equal(y.array, ref)


def test_gradient_of_indexing_matches_jnp():
    w = rand((V, E))
    ids = ints((B, P), V.size, 5)
    g = jax.grad(lambda w: (w["vocab", ids] ** 2).sum().array)(w)
    r = jax.grad(lambda a: (a[ids.array] ** 2).sum())(w.array)
    np.testing.assert_allclose(g.array, r)
    x = rand((B, P, E))
    g = jax.grad(lambda x, i: x["position", i, "embed", 1:3].sum().array)(x, jnp.int32(2))
    r = jax.grad(lambda a: a[:, 2, 1:3].sum())(x.array)
    np.testing.assert_allclose(g.array, r)


def test_take_scalar_and_traced():
    x = rand((B, P, E))
    np.testing.assert_array_equal(nx.take(x, "embed", 1).array, np.asarray(x.array)[:, :, 1])
    y = jax.jit(lambda x, i: x.take(P, i))(x, jnp.int32(3))
    np.testing.assert_array_equal(y.array, np.asarray(x.array)[:, 3, :])


# --- slice / updated_slice ---------------------------------------------------------------------


def test_slice_forms():
    x = rand((B, P, E))
    a = np.asarray(x.array)
    y = nx.slice(x, "position", start=1, length=3)
    assert y.axes == (B, Axis("position", 3), E)
    np.testing.assert_array_equal(y.array, a[:, 1:4])
    y = nx.slice(x, "position", new_axis=Axis("window", 2), start=4)
    assert y.axes == (B, Axis("window", 2), E)
    np.testing.assert_array_equal(y.array, a[:, 4:6])
    y = nx.slice(x, start={"position": 2, "embed": 1}, length={"embed": 2})
    np.testing.assert_array_equal(y.array, a[:, 2:, 1:3])
    y = jax.jit(lambda x, i: nx.slice(x, start={"position": i}, length={"position": 2}))(x, jnp.int32(3))
    np.testing.assert_array_equal(y.array, a[:, 3:5])


def test_updated_slice_matches_jnp_and_grad():
    L = Axis("layer", 3)
    cache = rand((L, P, E))
    upd = nx.rearrange(rand((E, Axis("position", 2)), 1), ("embed", "position"))
    f = lambda c, u, i: nx.updated_slice(c, {"layer": 1, "position": i}, u)
    ref = lambda c, u, i: jax.lax.dynamic_update_slice(c, jnp.transpose(u)[None], (1, i, 0))
    for y in (f(cache, upd, 3), jax.jit(f)(cache, upd, jnp.int32(3))):
        assert y.axes == cache.axes
        np.testing.assert_array_equal(y.array, ref(cache.array, upd.array, 3))
    w = np.random.default_rng(9).normal(size=(3, 6, 4)).astype(np.float32)
    gc, gu = jax.grad(lambda c, u: (f(c, u, 2).array * w).sum(), argnums=(0, 1))(cache, upd)
    rc, ru = jax.grad(lambda c, u: (ref(c, u, 2) * w).sum(), argnums=(0, 1))(cache.array, upd.array)
    np.testing.assert_allclose(gc.array, rc)
    np.testing.assert_allclose(gu.array, ru)


# --- errors ----------------------------------------------------------------------------------------


def test_index_errors():
    x = rand((B, P, E))
    with pytest.raises(ValueError, match="Axis 'nope' not found in array with axes \\(batch:2, position:6, embed:4\\)"):
        x["nope", 0]
    with pytest.raises(IndexError, match="Index 6 is out of range for axis 'position' of size 6"):
        x["position", 6]
    with pytest.raises(IndexError, match="Index -7 is out of range for axis 'position'"):
        x["position", -7]
    with pytest.raises(TypeError, match="Positional index 0"):
        x[0]
    with pytest.raises(TypeError, match="Positional index 0"):
        x[0, "position"]
    with pytest.raises(TypeError, match="odd number of entries"):
        x["position", 1, "batch"]
    with pytest.raises(TypeError, match="names an axis but gives no index"):
        x["position"]
    with pytest.raises(ValueError, match="Axis 'position' indexed twice"):
        x[{"position": 1, P: 2}]
    with pytest.raises(ValueError, match="has size 6 in the array but 5 was given"):
        x[Axis("position", 5), 0]
    with pytest.raises(TypeError, match="unnamed array of shape \\(2,\\)"):
        x["position", jnp.array([0, 1])]
    with pytest.raises(TypeError, match="integer dtype"):
        x["position", rand((B,))]
    with pytest.raises(TypeError, match="is a bool"):
        x["position", True]
    with pytest.raises(TypeError, match="slice bounds must be static ints"):
        jax.jit(lambda x, i: x["position", i:])(x, jnp.int32(1))
    with pytest.raises(IndexError, match="dslice of size 7 is larger than axis 'position'"):
        x["position", nx.ds(0, 7)]
    with pytest.raises(ValueError, match="Index arrays have axis 'batch' of size 3 but the indexed array has it with size 2"):
        x["position", ints((Axis("batch", 3),), 6)]


def test_slice_and_updated_slice_errors():
    x = rand((B, P, E))
    with pytest.raises(IndexError, match="start 5 with length 3 is out of range for axis 'position' of size 6"):
        nx.slice(x, "position", start=5, length=3)
    with pytest.raises(TypeError, match="traced start on axis 'position' needs a static length"):
        jax.jit(lambda x, i: nx.slice(x, "position", start=i))(x, jnp.int32(0))
    with pytest.raises(ValueError, match="new axis Axis\\('w', 3\\) does not have the slice length 2"):
        nx.slice(x, "position", new_axis=Axis("w", 3), length=2)
    with pytest.raises(TypeError, match="give either axis="):
        nx.slice(x, "position", start={"position": 1})
    with pytest.raises(ValueError, match="update axis 'head' is not an axis of the array"):
        nx.updated_slice(x, {}, rand((Axis("head", 1),)))
    with pytest.raises(ValueError, match="update axis 'embed' has size 5, larger than the array's 4"):
        nx.updated_slice(x, {}, rand((Axis("embed", 5),)))
    with pytest.raises(IndexError, match="start 5 with update size 2 is out of range for axis 'position'"):
        nx.updated_slice(x, {"position": 5}, rand((Axis("position", 2),)))
    with pytest.raises(TypeError, match="update must be a NamedArray"):
        nx.updated_slice(x, {}, np.zeros(3))


def test_indexing_results_are_tagged():
    w, ids = rand((V, E)), ints((B, P), V.size)
    jaxpr = jax.make_jaxpr(lambda w, ids: w["vocab", ids])(w, ids)
    tags = [e.params["axes"] for e in jaxpr.jaxpr.eqns if e.primitive.name == "named_axes"]
    assert tags[-1] == ("batch", "position", "embed")


# --- random combinations against NumPy ------------------------------------------------------

_index_value = st.one_of(
    st.integers(-3, 2),
    st.builds(slice, st.integers(-4, 4) | st.none(), st.integers(-4, 4) | st.none(), st.sampled_from([None, 1, 2, -1])),
)


@given(st.dictionaries(st.sampled_from(["batch", "position", "head"]), _index_value, max_size=3))
def test_random_static_indices_match_numpy(idx):
    x = rand((Axis("batch", 3), Axis("position", 4), H))
    ref_idx = tuple(idx.get(name, slice(None)) for name in x.axis_names)
    ref = np.asarray(x.array)[ref_idx]
    y = x[idx] if idx else x[{}]
    np.testing.assert_array_equal(y.array, ref)
    assert y.axis_names == tuple(n for n in x.axis_names if not isinstance(idx.get(n, slice(None)), int))


def test_take_gradient_and_vmap():
    w = rand((V, E))
    ids = ints((P,), V.size, 6)
    g = jax.grad(lambda w: (nx.take(w, "vocab", ids) * nx.arange(P)).sum().array)(w)
    r = jax.grad(lambda a: (a[ids.array] * jnp.arange(6.0)[:, None]).sum())(w.array)
    np.testing.assert_allclose(g.array, r)
    batched = jax.vmap(lambda i: w["vocab", i].array)(jnp.arange(3))
    np.testing.assert_array_equal(batched, np.asarray(w.array)[:3])
