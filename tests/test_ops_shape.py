"""Shape ops by name, against NumPy / jnp references: eager, under jit, gradients, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

import namax as nx
from namax import Axis

B, P, E, H = Axis("batch", 2), Axis("position", 3), Axis("embed", 4), Axis("head", 5)
AXES = (B, P, E, H)


def rand(axes, seed=0):
    shape = tuple(a.size for a in axes)
    return nx.named(np.random.default_rng(seed).normal(size=shape).astype(np.float32), axes)


def both(fn, *args):
    """fn(*args) eagerly and under jax.jit; returns the two results."""
    return fn(*args), jax.jit(fn)(*args)


def tagged_names(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args)
    return [e.params["axes"] for e in jaxpr.jaxpr.eqns if e.primitive.name == "named_axes"]


# --- rename / broadcast (existing ops keep working) ---------------------------------------


def test_rename_and_broadcast_still_work():
    x = rand((B, P))
    y = nx.rename(x, {"position": "key_position"})
    assert y.axis_names == ("batch", "key_position")
    np.testing.assert_array_equal(y.array, x.array)
    z = x.broadcast_axis(E)
    assert z.axis_names == ("embed", "batch", "position")
    np.testing.assert_array_equal(z.array, np.broadcast_to(np.asarray(x.array), (4, 2, 3)))
    w = x.broadcast_to((P, E, B))
    np.testing.assert_array_equal(w.array, np.broadcast_to(np.asarray(x.array).T[:, None, :], (3, 4, 2)))


# --- rearrange ----------------------------------------------------------------------------


@given(st.permutations(range(4)))
def test_rearrange_is_a_transpose(perm):
    x = rand(AXES)
    spec = [AXES[i].name for i in perm]
    for y in both(lambda x: nx.rearrange(x, spec), x):
        assert y.axis_names == tuple(spec)
        np.testing.assert_array_equal(y.array, np.transpose(np.asarray(x.array), perm))
    assert x.transpose(spec).axis_names == tuple(spec)
    assert x.rearrange(spec).axis_names == tuple(spec)


@given(st.permutations(range(4)), st.integers(0, 4), st.integers(0, 2))
def test_rearrange_with_ellipsis(perm, n_named, cut):
    x = rand(AXES)
    chosen = [AXES[i].name for i in perm[:n_named]]
    cut = min(cut, n_named)
    spec = chosen[:cut] + [...] + chosen[cut:]
    rest = [a.name for a in AXES if a.name not in chosen]
    expected = chosen[:cut] + rest + chosen[cut:]
    y = nx.rearrange(x, spec)
    assert y.axis_names == tuple(expected)
    order = [x.axis_names.index(n) for n in expected]
    np.testing.assert_array_equal(y.array, np.transpose(np.asarray(x.array), order))


def test_rearrange_errors():
    x = rand((B, P, E))
    with pytest.raises(ValueError, match=r"axes \['embed'\] .* are not placed"):
        nx.rearrange(x, ("position", "batch"))
    with pytest.raises(ValueError, match="Axis 'nope' not found"):
        nx.rearrange(x, ("nope", ...))
    with pytest.raises(ValueError, match="at most one '...'"):
        nx.rearrange(x, (..., "batch", ...))
    with pytest.raises(ValueError, match="Duplicate axis name 'batch'"):
        nx.rearrange(x, ("batch", "batch", ...))


# --- flatten / unflatten ------------------------------------------------------------------


@given(st.permutations(range(4)), st.integers(1, 4))
def test_flatten_axes_matches_numpy(perm, k):
    x = rand(AXES)
    old = [AXES[i].name for i in perm[:k]]
    y = nx.flatten_axes(x, old, "merged")
    # reference: move the old axes (in the given order) to where the earliest of them was
    idx = [x.axis_names.index(n) for n in old]
    rest = [i for i in range(4) if i not in idx]
    cut = sum(1 for i in rest if i < min(idx))
    ref = np.transpose(np.asarray(x.array), rest[:cut] + idx + rest[cut:])
    ref_shape = [AXES[i].size for i in rest[:cut]] + [-1] + [AXES[i].size for i in rest[cut:]]
    np.testing.assert_array_equal(y.array, ref.reshape(ref_shape))
    size = int(np.prod([AXES[i].size for i in idx]))
    assert y.axis_names == tuple([AXES[i].name for i in rest[:cut]] + ["merged"] + [AXES[i].name for i in rest[cut:]])
    assert y.axis_size("merged") == size
    # unflatten undoes it (then rearrange back)
    back = nx.unflatten_axis(y, "merged", tuple(x.resolve_axis(n) for n in old))
    np.testing.assert_array_equal(nx.rearrange(back, x.axis_names).array, x.array)


def test_flatten_unflatten_methods_and_jit():
    x = rand((B, P, E))
    T = Axis("token", 6)
    for y in both(lambda x: x.flatten_axes(("batch", "position"), T), x):
        assert y.axes == (T, E)
        np.testing.assert_array_equal(y.array, np.asarray(x.array).reshape(6, 4))
    for z in both(lambda y: y.unflatten_axis("token", (B, P)), y):
        assert z.axes == x.axes
        np.testing.assert_array_equal(z.array, x.array)


def test_flatten_unflatten_errors():
    x = rand((B, P, E))
    with pytest.raises(ValueError, match="new axis Axis\\('token', 5\\) must have size 6"):
        nx.flatten_axes(x, ("batch", "position"), Axis("token", 5))
    with pytest.raises(ValueError, match="new axis name 'embed' is already an axis"):
        nx.flatten_axes(x, ("batch", "position"), "embed")
    with pytest.raises(ValueError, match="Axis 'nope' not found"):
        nx.flatten_axes(x, ("batch", "nope"), "t")
    with pytest.raises(ValueError, match="old_axes is empty"):
        nx.flatten_axes(x, (), "t")
    with pytest.raises(ValueError, match="have 6 elements but axis 'embed' has size 4"):
        nx.unflatten_axis(x, "embed", (Axis("a", 2), Axis("b", 3)))
    with pytest.raises(TypeError, match="needs Axis objects"):
        nx.unflatten_axis(x, "embed", ("a", "b"))
    with pytest.raises(ValueError, match="Duplicate axis name 'batch'"):
        nx.unflatten_axis(x, "embed", (Axis("batch", 2), Axis("b", 2)))


# --- unbind / split / stack / concatenate ---------------------------------------------------


def test_unbind_matches_numpy():
    x = rand((B, P, E))
    for pieces in both(lambda x: x.unbind("position"), x):
        assert len(pieces) == 3
        for k, piece in enumerate(pieces):
            assert piece.axes == (B, E)
            np.testing.assert_array_equal(piece.array, np.asarray(x.array)[:, k, :])
    with pytest.raises(ValueError, match="Axis 'qkv' not found"):
        x.unbind("qkv")


def test_split_matches_numpy():
    x = rand((B, H))
    parts = [Axis("a", 1), Axis("b", 3), Axis("c", 1)]
    for pieces in both(lambda x: x.split("head", parts), x):
        ref = np.split(np.asarray(x.array), [1, 4], axis=1)
        for piece, r, ax in zip(pieces, ref, parts):
            assert piece.axes == (B, ax)
            np.testing.assert_array_equal(piece.array, r)
    with pytest.raises(ValueError, match="sizes summing to 4 but axis 'head' has size 5"):
        nx.split(x, "head", [Axis("a", 1), Axis("b", 3)])
    with pytest.raises(ValueError, match="Duplicate axis name 'batch'"):
        nx.split(x, "head", [Axis("batch", 5)])


def test_concatenate_matches_numpy_and_grad():
    a = rand((B, P, E), 1)
    b = nx.rearrange(rand((B, Axis("position", 2), E), 2), ("embed", "batch", "position"))
    for y in both(lambda a, b: nx.concatenate("position", [a, b]), a, b):
        assert y.axes == (B, Axis("position", 5), E)
        ref = np.concatenate([np.asarray(a.array), np.transpose(np.asarray(b.array), (1, 2, 0))], axis=1)
        np.testing.assert_array_equal(y.array, ref)
    assert nx.concatenate(Axis("position", 5), [a, b]).axes == (B, Axis("position", 5), E)

    w = np.random.default_rng(3).normal(size=(2, 5, 4)).astype(np.float32)
    ga, gb = jax.grad(lambda a, b: (nx.concatenate("position", [a, b]).array * w).sum(), argnums=(0, 1))(a, b)
    ra, rb = jax.grad(
        lambda a, b: (jnp.concatenate([a, jnp.transpose(b, (1, 2, 0))], axis=1) * w).sum(), argnums=(0, 1)
    )(a.array, b.array)
    np.testing.assert_allclose(ga.array, ra)
    np.testing.assert_allclose(gb.array, rb)


def test_concatenate_errors():
    a, b = rand((B, P)), rand((B, E))
    with pytest.raises(ValueError, match="array 1 with axes \\(batch:2, embed:4\\) has no axis 'position'"):
        nx.concatenate("position", [a, b])
    with pytest.raises(ValueError, match="array 1 has axes .* but array 0 has .* \\(apart from 'batch'\\)"):
        nx.concatenate("batch", [a, b])
    with pytest.raises(ValueError, match="must have size 6"):
        nx.concatenate(Axis("position", 7), [a, a])
    with pytest.raises(ValueError, match="no arrays given"):
        nx.concatenate("position", [])
    with pytest.raises(TypeError, match="argument 1 is a ndarray"):
        nx.concatenate("position", [a, np.zeros((2, 3))])


def test_stack_matches_numpy():
    xs = [rand((B, P), k) for k in range(3)]
    xs[1] = nx.rearrange(xs[1], ("position", "batch"))
    L = Axis("layer", 3)
    for y in both(lambda *xs: nx.stack(L, xs), *xs):
        assert y.axes == (L, B, P)
        ref = np.stack([np.asarray(xs[0].array), np.asarray(xs[1].array).T, np.asarray(xs[2].array)])
        np.testing.assert_array_equal(y.array, ref)
    assert nx.stack("layer", xs).axes == (L, B, P)
    with pytest.raises(ValueError, match="must have size 3"):
        nx.stack(Axis("layer", 2), xs)
    with pytest.raises(ValueError, match="'batch' is already an axis"):
        nx.stack("batch", xs)
    with pytest.raises(ValueError, match="array 1 has axes"):
        nx.stack("layer", [xs[0], rand((B, E))])


# --- roll / pad ---------------------------------------------------------------------------


def test_roll_matches_numpy():
    x = rand((B, P, E))
    for y in both(lambda x: nx.roll(x, 2, "embed"), x):
        np.testing.assert_array_equal(y.array, np.roll(np.asarray(x.array), 2, axis=2))
    y = nx.roll(x, (1, -1), ("position", "batch"))
    np.testing.assert_array_equal(y.array, np.roll(np.asarray(x.array), (1, -1), axis=(1, 0)))
    y = jax.jit(lambda x, s: nx.roll(x, s, "position"))(x, jnp.int32(1))
    np.testing.assert_array_equal(y.array, np.roll(np.asarray(x.array), 1, axis=1))
    with pytest.raises(ValueError, match="2 shifts given for 1 axes"):
        nx.roll(x, (1, 2), "position")


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect"])
def test_pad_matches_numpy(mode):
    x = rand((B, P, E))
    f = lambda x: nx.pad(x, {"position": (1, 2), "embed": 1}, mode=mode)
    for y in both(f, x):
        assert y.axes == (B, Axis("position", 6), Axis("embed", 6))
        np.testing.assert_array_equal(y.array, np.pad(np.asarray(x.array), [(0, 0), (1, 2), (1, 1)], mode=mode))


def test_pad_constant_and_grad():
    x = rand((B, P))
    y = nx.pad(x, {"batch": (0, 1)}, constant_values=7.0)
    np.testing.assert_array_equal(y.array, np.pad(np.asarray(x.array), [(0, 1), (0, 0)], constant_values=7.0))
    w = np.random.default_rng(4).normal(size=(3, 6)).astype(np.float32)
    g = jax.grad(lambda x: (nx.pad(x, {"batch": (1, 0), "position": (2, 1)}, mode="reflect").array * w).sum())(x)
    r = jax.grad(lambda a: (jnp.pad(a, [(1, 0), (2, 1)], mode="reflect") * w).sum())(x.array)
    np.testing.assert_allclose(g.array, r, rtol=1e-6)


def test_pad_errors():
    x = rand((B, P))
    with pytest.raises(ValueError, match="width for axis 'batch' must be an int >= 0"):
        nx.pad(x, {"batch": (-1, 0)})
    with pytest.raises(ValueError, match="Axis 'nope' not found"):
        nx.pad(x, {"nope": 1})


# --- tags in the jaxpr ----------------------------------------------------------------------


def test_results_are_tagged_in_jaxpr():
    x = rand((B, P, E))
    assert ("embed", "batch", "position") in tagged_names(lambda x: nx.rearrange(x, ("embed", ...)), x)
    assert ("batch", "token") in tagged_names(lambda x: nx.flatten_axes(x, ("position", "embed"), "token"), x)
    assert tagged_names(lambda x: x.unbind("position"), x).count(("batch", "embed")) == 3
    assert ("batch", "position", "embed") in tagged_names(lambda x: nx.concatenate("position", [x, x]), x)
