"""Haliax ops added for issue 12 (part A) against NumPy / jnp references computed here:
elementwise extras, the nan-reductions, sorting/counting, linalg, array helpers, ``x.at``,
and the NamedArray methods. Axis order is randomised: names, not positions, must decide."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import namax as nx
from namax import Axis, NamedArray
from namax.ops import arrays as arrays_mod, elementwise as ew, reductions as red
from namax.tag import named_axes_p

A, B, C = Axis("a", 2), Axis("b", 3), Axis("c", 4)
ABC = (A, B, C)


def rand(axes, seed=0, low=-2.0, high=2.0, dtype=np.float32):
    shape = tuple(a.size for a in axes)
    return nx.named(np.random.default_rng(seed).uniform(low, high, size=shape).astype(dtype), axes)


def rand_int(axes, seed=0, low=0, high=5):
    shape = tuple(a.size for a in axes)
    return nx.named(np.random.default_rng(seed).integers(low, high, size=shape).astype(np.int32), axes)


def by_name(x: NamedArray, axes) -> np.ndarray:
    """``x``'s values laid out in the order of ``axes`` (names decide, not positions)."""
    return np.asarray(jnp.transpose(x.array, [x.axis_index(a) for a in axes]))


def permuted(x: NamedArray, order) -> NamedArray:
    return x.rearrange(tuple(x.axes[i].name for i in order))


perms3 = st.permutations([0, 1, 2])
few = settings(max_examples=6)  # each example compiles new shapes: keep the file fast


def with_nans(axes, seed=0):
    """NaN wherever the index sum is a multiple of 3: some in every slice, never a whole one."""
    x = by_name(rand(axes, seed), axes).copy()
    x[np.indices(x.shape).sum(axis=0) % 3 == 0] = np.nan
    return nx.named(x, axes)


def last_eqn_is_named_axes(fn, *args):
    eqns = jax.make_jaxpr(fn)(*args).eqns
    return eqns[-1].primitive is named_axes_p


# --- elementwise -------------------------------------------------------------------------

UNARY_REFS = {
    "rsqrt": (lambda v: 1 / np.sqrt(v), (0.5, 3)), "fabs": (np.fabs, (-2, 2)), "fix": (np.fix, (-3, 3)),
    "around": (np.around, (-3, 3)), "iscomplex": (np.iscomplex, (-2, 2)), "isreal": (np.isreal, (-2, 2)),
    "copy": (np.copy, (-2, 2)),
}


@pytest.mark.parametrize("name", sorted(UNARY_REFS))
def test_new_unary_ops_match_numpy(name):
    ref, (lo, hi) = UNARY_REFS[name]
    x = rand((A, B), low=lo, high=hi)
    for out in (getattr(nx, name)(x), jax.jit(getattr(nx, name))(x)):
        assert out.axes == (A, B)
        np.testing.assert_allclose(out.array, ref(np.asarray(x.array)), rtol=1e-6)
    assert last_eqn_is_named_axes(getattr(nx, name), x)


def test_infinity_tests_and_bit_ops_match_numpy():
    f = nx.named(jnp.array([-jnp.inf, -1.0, jnp.inf, jnp.nan]), "x")
    np.testing.assert_array_equal(nx.isneginf(f).array, np.isneginf(np.asarray(f.array)))
    np.testing.assert_array_equal(nx.isposinf(f).array, np.isposinf(np.asarray(f.array)))
    i = rand_int((A, B), low=0, high=200)
    raw = np.asarray(i.array)
    np.testing.assert_array_equal(nx.bitwise_count(i).array, np.bitwise_count(raw))
    np.testing.assert_array_equal(nx.bitwise_invert(i).array, np.bitwise_invert(raw))


@few
@given(perms3)
def test_shifts_and_two_output_ops_broadcast_by_name(order):
    x = rand_int(ABC, seed=1, low=1, high=50)
    s = permuted(rand_int((C, A), seed=2, low=0, high=4), [1, 0])  # axes (a, c) or (c, a)
    xp = permuted(x, order)
    ref_x, ref_s = by_name(x, ABC), by_name(s, (A, C))[:, None, :]
    for name, ref in (("bitwise_left_shift", np.left_shift), ("bitwise_right_shift", np.right_shift)):
        out = getattr(nx, name)(xp, s)
        np.testing.assert_array_equal(by_name(out, ABC), ref(ref_x, ref_s))
    q, r = nx.divmod(xp, s + 1)
    assert q.axes == r.axes
    np.testing.assert_array_equal(by_name(q, ABC), np.divmod(ref_x, ref_s + 1)[0])
    np.testing.assert_array_equal(by_name(r, ABC), np.divmod(ref_x, ref_s + 1)[1])
    m, e = nx.frexp(permuted(rand(ABC), order))
    ref_m, ref_e = np.frexp(by_name(rand(ABC), ABC))
    np.testing.assert_array_equal(by_name(m, ABC), ref_m)
    np.testing.assert_array_equal(by_name(e, ABC), ref_e)


def test_two_output_ops_pass_plain_arrays_and_check_arity():
    np.testing.assert_array_equal(nx.divmod(jnp.array([7]), 2)[1], np.array([1]))
    with pytest.raises(TypeError, match="divmod takes 2 operand"):
        nx.divmod(rand((A,)))


@few
@given(perms3)
def test_whole_array_comparisons_match_by_name(order):
    x = rand(ABC)
    xp = permuted(x, order)
    assert bool(nx.array_equal(x, xp)) and bool(nx.array_equiv(x, xp)) and bool(nx.allclose(x, xp))
    changed = x.at["b", 1].add(1.0)
    assert not bool(nx.array_equal(changed, xp)) and not bool(nx.allclose(changed, xp))
    assert bool(nx.allclose(x + 1e-7, xp))
    # different axes: array_equal is False; array_equiv broadcasts a subset by name
    row = rand((C, B), seed=3)
    tiled = nx.broadcast_to(row, (C, A, B))
    assert bool(nx.array_equiv(permuted(tiled, order), row))
    assert not bool(nx.array_equal(tiled, row))
    assert not bool(nx.array_equiv(tiled, rand((Axis("z", 4),))))  # no subset: False, as Haliax
    assert not bool(nx.array_equiv(x, rand((A, B.resize(5)))))  # sizes conflict: False


def test_whole_array_comparisons_are_0d_named_and_jit():
    x = rand(ABC)
    out = jax.jit(nx.allclose)(x, permuted(x, [2, 0, 1]))
    assert isinstance(out, NamedArray) and out.axes == () and bool(out)
    assert bool(nx.allclose(x, x + 1e-3, atol=1e-2)) and not bool(nx.allclose(x, x + 1e-3))
    with pytest.raises(ValueError, match="'b' has size 3 in one of the operands of allclose and size 5"):
        nx.allclose(x, rand((B.resize(5),)))


# --- reductions ---------------------------------------------------------------------------

NAN_REDUCTIONS = ["nansum", "nanmean", "nanmax", "nanmin", "nanprod", "nanstd", "nanvar"]


@few
@given(perms3, st.sampled_from([None, "a", ("c", "a"), ("b", "c", "a")]))
def test_nan_reductions_match_numpy_by_name(order, sel):
    x = with_nans(ABC)
    names = [a.name for a in ABC]
    dims = None if sel is None else tuple(names.index(s) for s in (sel if isinstance(sel, tuple) else (sel,)))
    kept = tuple(a for a in ABC if dims is not None and names.index(a.name) not in dims)
    for name in NAN_REDUCTIONS:
        out = getattr(nx, name)(permuted(x, order), sel)
        ref = getattr(np, name)(by_name(x, ABC), axis=dims)
        assert {a.name for a in out.axes} == {a.name for a in kept}
        assert not np.isnan(ref).any()
        np.testing.assert_allclose(by_name(out, kept) if kept else out.array, ref, rtol=1e-5)


def test_nan_reduction_keywords_and_gradient():
    x = with_nans(ABC)
    np.testing.assert_allclose(nx.nanstd(x, "c", ddof=1).array, np.nanstd(by_name(x, ABC), axis=2, ddof=1), rtol=1e-5)
    mask = rand((C,)) > 0
    ref = np.nansum(np.where(np.asarray(mask.array), by_name(x, ABC), 0), axis=2)
    np.testing.assert_allclose(nx.nansum(x, "c", where=mask).array, ref, rtol=1e-5)
    grad = jax.grad(lambda v: nx.nanmean(v).array)(x)
    np.testing.assert_allclose(grad.array, jax.grad(jnp.nanmean)(x.array))


@few
@given(perms3, st.sampled_from(["a", "b", "c"]))
def test_nan_arg_and_scan_families_match_numpy(order, axis):
    x = with_nans(ABC)
    xp = permuted(x, order)
    i = [a.name for a in ABC].index(axis)
    kept = tuple(a for a in ABC if a.name != axis)
    ref = by_name(x, ABC)
    np.testing.assert_array_equal(by_name(nx.nanargmax(xp, axis), kept), np.nanargmax(ref, axis=i))
    np.testing.assert_array_equal(by_name(nx.nanargmin(xp, axis), kept), np.nanargmin(ref, axis=i))
    np.testing.assert_allclose(by_name(nx.nancumsum(xp, axis), ABC), np.nancumsum(ref, axis=i), rtol=1e-5)
    np.testing.assert_allclose(by_name(nx.nancumprod(xp, axis), ABC), np.nancumprod(ref, axis=i), rtol=1e-5)
    clean = rand(ABC, seed=3)
    np.testing.assert_allclose(by_name(nx.ptp(permuted(clean, order), axis), kept),
                               np.ptp(by_name(clean, ABC), axis=i), rtol=1e-5)
    np.testing.assert_allclose(by_name(nx.product(permuted(clean, order), axis), kept),
                               np.prod(by_name(clean, ABC), axis=i), rtol=1e-5)


def test_reduction_families_come_from_tables():
    for name in list(red.REDUCTIONS) + list(red.ARG_REDUCTIONS) + list(red.SCANS):
        assert getattr(nx, name).__name__ == name
    # a nan-variant is the base op's generic definition with another jnp function, not a copy
    assert nx.nansum.__code__ is nx.sum.__code__
    assert nx.nanargmax.__code__ is nx.argmax.__code__
    assert nx.nancumsum.__code__ is nx.cumsum.__code__


def test_reduction_errors():
    with pytest.raises(TypeError, match="ptp does not take where="):
        nx.ptp(rand(ABC), "a", where=rand((A,)) > 0)
    with pytest.raises(ValueError, match="Axis 'z' not found"):
        nx.nanmax(rand(ABC), "z")
    with pytest.raises(TypeError, match="argsort needs one axis"):
        nx.argsort(rand(ABC), None)


def test_argsort_stable_keeps_ties_in_order():
    x = nx.named(jnp.array([2, 1, 2, 1, 0]), "x")
    np.testing.assert_array_equal(nx.argsort(x, "x", stable=True).array, np.argsort(np.asarray(x.array), kind="stable"))


# --- sorting and counting ------------------------------------------------------------------


@few
@given(perms3, st.sampled_from(["a", "b", "c"]), st.integers(0, 4))
def test_top_k_matches_numpy_sort_by_name(order, axis, k):
    x = rand(ABC, seed=4)
    size = x.axis_size(axis)
    if k > size:
        with pytest.raises(ValueError, match=f"k={k} is out of range for axis '{axis}' of size {size}"):
            nx.top_k(permuted(x, order), axis, k)
        return
    values, indices = nx.top_k(permuted(x, order), axis, k, new_axis="top")
    i = [a.name for a in ABC].index(axis)
    out_axes = tuple(Axis("top", k) if a.name == axis else a for a in ABC)
    assert values.axes == indices.axes
    assert values.axes[permuted(x, order).axis_index(axis)] == Axis("top", k)
    ref = by_name(x, ABC)
    ref_idx = np.take(np.argsort(-ref, axis=i, kind="stable"), np.arange(k), axis=i)
    np.testing.assert_array_equal(by_name(indices, out_axes), ref_idx)
    np.testing.assert_array_equal(by_name(values, out_axes), np.take_along_axis(ref, ref_idx, axis=i))


def test_top_k_default_axis_and_errors():
    values, _ = nx.top_k(rand(ABC), "c", 2)
    assert values.axes == (A, B, C.resize(2))
    with pytest.raises(ValueError, match="new_axis Axis\\('top', 3\\) must have size k=2"):
        nx.top_k(rand(ABC), "c", 2, new_axis=Axis("top", 3))
    with pytest.raises(TypeError, match="k must be a static int"):
        nx.top_k(rand(ABC), "c", 1.5)


def test_unique_family_matches_numpy_and_jit():
    x = rand_int((A, C), seed=5, low=0, high=4)
    raw = by_name(x, (A, C))
    ref_v, ref_i, ref_inv, ref_c = np.unique(raw, return_index=True, return_inverse=True, return_counts=True)
    U = Axis("u", len(ref_v))
    for fn in (nx.unique_all, jax.jit(nx.unique_all, static_argnums=1)):
        v, i, inv, c = fn(x.rearrange(("c", "a")), U)
        np.testing.assert_array_equal(v.array, ref_v)
        np.testing.assert_array_equal(c.array, ref_c)
        np.testing.assert_array_equal(by_name(inv, (A, C)), ref_inv.reshape(raw.shape))
        # first-occurrence indices are into the flattened array in its own layout
        np.testing.assert_array_equal(np.asarray(x.rearrange(("c", "a")).array).reshape(-1)[np.asarray(i.array)], ref_v)
    assert nx.unique_values(x, U).axes == (U,)
    np.testing.assert_array_equal(nx.unique_counts(x, U)[1].array, ref_c)
    np.testing.assert_array_equal(by_name(nx.unique_inverse(x, U)[1], (A, C)), ref_inv.reshape(raw.shape))
    padded = nx.unique(x, Axis("u", len(ref_v) + 2), fill_value=-1)
    np.testing.assert_array_equal(padded.array, np.concatenate([ref_v, [-1, -1]]))


def test_unique_along_an_axis_replaces_it():
    x = nx.named(jnp.array([[1, 2], [3, 4], [1, 2]]), ("row", "col"))
    values, inverse = nx.unique(x, Axis("distinct", 2), axis="row", return_inverse=True)
    ref_v, ref_inv = np.unique(np.asarray(x.array), axis=0, return_inverse=True)
    assert values.axes == (Axis("distinct", 2), Axis("col", 2)) and inverse.axes == (Axis("row", 3),)
    np.testing.assert_array_equal(values.array, ref_v)
    np.testing.assert_array_equal(inverse.array, ref_inv.reshape(-1))
    with pytest.raises(TypeError, match="Unique must be an Axis"):
        nx.unique(x, "distinct")


def test_searchsorted_nonzero_bincount_match_numpy():
    edges = nx.named(jnp.array([1.0, 2.0, 4.0, 8.0]), "edge")
    q = rand((A, B), seed=6, low=0, high=9)
    for side in ("left", "right"):
        out = nx.searchsorted(edges, q, side=side)
        assert out.axes == q.axes
        want = np.searchsorted(np.asarray(edges.array), np.asarray(q.array), side=side)
        np.testing.assert_array_equal(out.array, want)
    assert nx.searchsorted(edges, 3.0).axes == ()
    unsorted = nx.named(jnp.array([8.0, 1.0, 4.0, 2.0]), "edge")
    np.testing.assert_array_equal(
        nx.searchsorted(unsorted, q, sorter=nx.argsort(unsorted, "edge")).array,
        np.searchsorted(np.asarray(unsorted.array), np.asarray(q.array), sorter=np.argsort(np.asarray(unsorted.array))),
    )
    x = rand_int((A, B), seed=7, low=0, high=2)
    hits = nx.nonzero(x, size=Axis("hit", A.size * B.size), fill_value=-1)
    ref = np.nonzero(np.asarray(x.array))
    for got, want in zip(hits, ref):
        assert got.axes == (Axis("hit", 6),)
        np.testing.assert_array_equal(got.array[: len(want)], want)
        assert (np.asarray(got.array)[len(want):] == -1).all()
    t = rand_int((C,), seed=8, low=0, high=3)
    w = rand((C,), seed=9)
    np.testing.assert_array_equal(nx.bincount(t, Axis("value", 5)).array, np.bincount(np.asarray(t.array), minlength=5))
    np.testing.assert_allclose(nx.bincount(t, Axis("value", 3), weights=w).array,
                               np.bincount(np.asarray(t.array), weights=np.asarray(w.array), minlength=3), rtol=1e-6)


def test_sorting_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"searchsorted: a must have exactly one axis, got \(a:2, b:3\)"):
        nx.searchsorted(rand((A, B)), 1.0)
    with pytest.raises(TypeError, match="unnamed array of shape \\(3,\\)"):
        nx.searchsorted(rand((C,)), jnp.zeros(3))
    with pytest.raises(ValueError, match="minlength=5 is larger than the Counts axis 'value' of size 3"):
        nx.bincount(rand_int((C,)), Axis("value", 3), minlength=5)
    with pytest.raises(TypeError, match="size must be an Axis"):
        nx.nonzero(rand((A,)), size=4)


# --- linalg ---------------------------------------------------------------------------------


@few
@given(perms3, st.integers(-2, 2))
def test_tril_triu_trace_by_name(order, k):
    x = rand(ABC, seed=10)
    xp = permuted(x, order)
    ref = by_name(x, ABC)  # matrices over (b, c), batched over a
    lower, upper = nx.tril(xp, "b", "c", k=k), nx.triu(xp, "b", "c", k=k)
    assert lower.axes == xp.axes and upper.axes == xp.axes
    np.testing.assert_array_equal(by_name(lower, ABC), np.tril(ref, k))
    np.testing.assert_array_equal(by_name(upper, ABC), np.triu(ref, k))
    # rows and columns swap when the axes do
    np.testing.assert_array_equal(by_name(nx.tril(xp, "c", "b", k=k), (A, C, B)), np.tril(ref.transpose(0, 2, 1), k))
    tr = nx.trace(xp, "b", "c", offset=k)
    assert tr.axes == (A,)
    np.testing.assert_allclose(tr.array, np.trace(ref, offset=k, axis1=1, axis2=2), rtol=1e-5)


def test_linalg_errors():
    with pytest.raises(ValueError, match="axis1 and axis2 are both 'b'"):
        nx.trace(rand(ABC), "b", "b")
    with pytest.raises(ValueError, match="Axis 'z' not found"):
        nx.tril(rand(ABC), "b", "z")


# --- array helpers --------------------------------------------------------------------------


@few
@given(perms3)
def test_ravel_flatten_follow_the_array_layout(order):
    xp = permuted(rand(ABC), order)
    for fn in (nx.ravel, nx.flatten):
        out = fn(xp, "flat")
        assert out.axes == (Axis("flat", 24),)
        np.testing.assert_array_equal(out.array, np.asarray(xp.array).reshape(-1))
    assert nx.ravel(nx.named(jnp.float32(3.0), ()), "flat").axes == (Axis("flat", 1),)


def test_pad_left_repeat_tile_match_numpy():
    x = rand((A, B))
    raw = np.asarray(x.array)
    padded = nx.pad_left(x, B, Axis("padded", 5), value=-1.0)
    assert padded.axes == (A, Axis("padded", 5))
    np.testing.assert_array_equal(padded.array, np.pad(raw, ((0, 0), (2, 0)), constant_values=-1.0))
    rep = nx.repeat(x, 2, "a")
    assert rep.axes == (A.resize(4), B)
    np.testing.assert_array_equal(rep.array, np.repeat(raw, 2, axis=0))
    per = nx.named(jnp.array([0, 1, 3]), "b")
    np.testing.assert_array_equal(nx.repeat(x, per, "b").array, np.repeat(raw, [0, 1, 3], axis=1))
    np.testing.assert_array_equal(
        jax.jit(lambda v, r: nx.repeat(v, r, "b", total_repeat_length=4))(x, per).array,
        np.repeat(raw, [0, 1, 3], axis=1),
    )
    tiled = nx.tile(x, {"b": 2, "copy": 3})
    assert tiled.axes == (Axis("copy", 3), A, B.resize(6))
    np.testing.assert_array_equal(tiled.array, np.tile(raw, (3, 1, 2)))


def test_packbits_unpackbits_geomspace_ndim_match_numpy():
    bits = rand_int((A, Axis("bit", 11)), seed=11, low=0, high=2).astype(jnp.uint8)
    raw = np.asarray(bits.array)
    for order in ("big", "little"):
        packed = nx.packbits(bits, "bit", bitorder=order)
        assert packed.axes == (A, Axis("bit", 2))
        np.testing.assert_array_equal(packed.array, np.packbits(raw, axis=1, bitorder=order))
        back = nx.unpackbits(packed, "bit", count=11, bitorder=order)
        assert back.axes == bits.axes
        np.testing.assert_array_equal(back.array, raw)
    assert nx.unpackbits(nx.packbits(bits, "bit"), "bit").axes == (A, Axis("bit", 16))
    g = nx.geomspace(Axis("g", 5), start=2.0, stop=32.0)
    np.testing.assert_allclose(g.array, np.geomspace(2.0, 32.0, 5), rtol=1e-6)
    assert nx.geomspace("g", start=1.0, stop=2.0).axes == (Axis("g", 50),)
    assert nx.ndim(rand(ABC)) == 3 and nx.ndim(jnp.zeros((2, 2))) == 2


def test_array_helper_errors():
    x = rand((A, B))
    with pytest.raises(ValueError, match="cannot pad axis 'b' of size 3 to the smaller Axis\\('p', 2\\)"):
        nx.pad_left(x, "b", Axis("p", 2))
    with pytest.raises(ValueError, match="repeats must have exactly the axis 'b', got \\(a:2\\)"):
        nx.repeat(x, nx.named(jnp.array([1, 1]), "a"), "b")
    with pytest.raises(TypeError, match="unnamed array of shape \\(3,\\)"):
        nx.repeat(x, jnp.array([1, 1, 1]), "b")
    with pytest.raises(ValueError, match="the new axis Axis\\('copy', 2\\) would have size reps=3"):
        nx.tile(x, {Axis("copy", 2): 3})
    with pytest.raises(ValueError, match="start is 0"):
        nx.geomspace(Axis("g", 3), start=0.0, stop=1.0)


# --- x.at[...] ------------------------------------------------------------------------------


def numpy_update(raw, index, method, values):
    out = raw.copy()
    if method == "set":
        out[index] = values
    elif method == "add":
        np.add.at(out, index, values)
    elif method == "multiply":
        np.multiply.at(out, index, values)
    elif method == "max":
        np.maximum.at(out, index, values)
    return out


@few
@given(perms3, st.sampled_from(["set", "add", "multiply", "max"]))
def test_at_with_static_indices_matches_numpy(order, method):
    x = rand(ABC, seed=12)
    xp = permuted(x, order)
    ref = by_name(x, ABC)
    region_vals = rand((C, A), seed=13)  # axes in another order than x's
    out = getattr(xp.at[{"b": 1, "c": slice(None)}], method)(region_vals)
    assert out.axes == xp.axes
    want = numpy_update(ref, (slice(None), 1, slice(None)), method, by_name(region_vals, (A, C)))
    np.testing.assert_allclose(by_name(out, ABC), want, rtol=1e-6)
    out = getattr(xp.at["c", 1:4:2, "a", -1], method)(2.0)
    want = numpy_update(ref, (-1, slice(None), slice(1, 4, 2)), method, 2.0)
    np.testing.assert_allclose(by_name(out, ABC), want, rtol=1e-6)


def test_at_get_equals_indexing_and_traced_indices_work_under_jit():
    x = rand(ABC, seed=14)
    ids = nx.named(jnp.array([2, 0, 2]), "pick")
    for idx in ({"b": 1}, {"c": slice(1, 3)}, {"b": ids}, {"a": 1, "c": nx.ds(1, 2)}, {"c": jnp.int32(3)}):
        got, want = x.at[idx].get(), x[idx]
        assert {a.name for a in got.axes} == {a.name for a in want.axes}
        np.testing.assert_array_equal(by_name(got, want.axes), want.array)

    @jax.jit
    def write(v, start, vals):
        return v.at["c", nx.ds(start, 2)].set(vals)

    vals = rand((B, Axis("c", 2), A), seed=15)
    ref = by_name(x, ABC).copy()
    ref[:, :, 1:3] = by_name(vals, (A, B, Axis("c", 2)))
    np.testing.assert_allclose(by_name(write(x, jnp.int32(1), vals), ABC), ref)
    ref = by_name(x, ABC).copy()
    assert C.size == 4
    ref[:, :, 3] = by_name(vals, (A, B, Axis("c", 2)))[:, :, 0]  # position 4 is past the end: dropped,
    np.testing.assert_allclose(by_name(write(x, jnp.int32(3), vals), ABC), ref)  # never clamped onto 2:4


def test_at_with_index_arrays_scatters_and_matches_shared_axes():
    x = rand((A, C), seed=16)
    ref = by_name(x, (A, C))
    ids = nx.named(jnp.array([3, 1, 3]), "pick")
    out = x.at["c", ids].add(1.0)  # duplicates accumulate, like jnp / np.add.at
    want = ref.copy()
    np.add.at(want, (slice(None), np.array([3, 1, 3])), 1.0)
    np.testing.assert_allclose(out.array, want, rtol=1e-6)
    # an index axis that x also has is matched (take-along), not crossed
    per_row = nx.named(jnp.array([0, 2]), "a")
    out = x.at["c", per_row].set(nx.named(jnp.array([10.0, 20.0]), "a"))
    want = ref.copy()
    want[[0, 1], [0, 2]] = [10.0, 20.0]
    np.testing.assert_array_equal(out.array, want)
    np.testing.assert_array_equal(x.at["c", per_row].get().array, x["c", per_row].array)
    np.testing.assert_allclose(x.at["a", 0].apply(jnp.negative).array, np.concatenate([-ref[:1], ref[1:]]))


def test_at_errors():
    x = rand((A, C))
    with pytest.raises(ValueError, match="values have axes \\['z'\\] that the indexed region \\(a:2\\) lacks"):
        x.at["c", 0].set(rand((Axis("z", 2),)))
    with pytest.raises(TypeError, match="unnamed array of shape \\(2,\\)"):
        x.at["c", 0].set(jnp.zeros(2))
    with pytest.raises(IndexError, match="index 4 is out of range for axis 'c' of size 4"):
        x.at["c", 4].set(0.0)
    with pytest.raises(ValueError, match="Axis 'z' not found"):
        x.at["z", 0].set(0.0)


def test_at_update_is_tagged_for_the_names_pass():
    assert last_eqn_is_named_axes(lambda v: v.at["c", 1].set(0.0), rand((A, C)))


# --- NamedArray methods -----------------------------------------------------------------------


def same(a, b):
    if isinstance(a, tuple):
        return all(same(u, v) for u, v in zip(a, b))
    assert a.axes == b.axes
    np.testing.assert_array_equal(a.array, b.array)
    return True


def test_methods_equal_their_functions():
    x = rand(ABC, seed=17)
    z = x + 1j * rand(ABC, seed=18)
    upd = rand((B,), seed=19)
    pairs = [
        (x.argsort("b", stable=True), nx.argsort(x, "b", stable=True)),
        (x.clip(-1, 1), nx.clip(x, -1, 1)),
        (z.conj(), nx.conj(z)), (z.conjugate(), nx.conjugate(z)), (z.real, nx.real(z)), (z.imag, nx.imag(z)),
        (x.copy(), nx.copy(x)),
        (x.cumprod("c"), nx.cumprod(x, "c")), (x.cumsum("c", dtype=jnp.float32), nx.cumsum(x, "c", dtype=jnp.float32)),
        (x.flatten("f"), nx.flatten(x, "f")), (x.ravel("f"), nx.ravel(x, "f")),
        (x.product("a"), nx.product(x, "a")), (x.ptp(("a", "c")), nx.ptp(x, ("a", "c"))),
        (x.round(1), nx.round(x, 1)), (x.sort("c"), nx.sort(x, "c")),
        (x.trace("b", "c", offset=1), nx.trace(x, "b", "c", offset=1)),
        (x.slice("c", start=1, length=2), nx.slice(x, "c", start=1, length=2)),
        (x.slice({"c": 1}, {"c": 2}), nx.slice(x, start={"c": 1}, length={"c": 2})),
        (x.updated_slice({"a": 1, "c": 0}, upd), nx.updated_slice(x, {"a": 1, "c": 0}, upd)),
    ]
    for got, want in pairs:
        assert same(got, want)
    assert x.tolist() == np.asarray(x.array).tolist()
    assert x.tobytes() == np.asarray(x.array).tobytes()
    total = nx.sum(x)
    assert total.scalar().shape == () and total.item() == pytest.approx(float(np.asarray(x.array).sum()), rel=1e-5)
    with pytest.raises(ValueError, match="expected a 0-d NamedArray, got axes \\(a:2, b:3, c:4\\)"):
        x.scalar()


def test_axis_indices_and_matches_axes():
    x = rand(ABC)
    assert x.axis_indices("c") == 2 and x.axis_indices("z") is None
    assert x.axis_indices(("c", Axis("z", 1), A)) == (2, None, 0)
    with pytest.raises(ValueError, match="Axis 'b' has size 3 in the array but 5 was given"):
        x.axis_indices(Axis("b", 5))
    cases = {
        "a b c": True, "a c b": False, "a ...": True, "... c": True, "a ... c": True, "b ...": False,
        ("a", ..., "c"): True, ("a", "b"): False, frozenset({"c", "a", "b"}): True, frozenset({"c", "a"}): False,
        frozenset({"c", ...}): True, "a b c ...": True, "a b ... b c": False,
    }
    for spec, want in cases.items():
        assert x.matches_axes(spec) is want, spec
        assert arrays_mod.matches_axes(x, spec) is want
    with pytest.raises(TypeError, match="at most one"):
        x.matches_axes("a ... b ...")
    with pytest.raises(TypeError, match="spec must be a string"):
        x.matches_axes(3)


def test_new_ops_are_exported_and_tagged():
    exported = set(nx.__all__)
    for name in itertools.chain(ew.OTHER_UNARY, ew.TWO_OUTPUT_NAMES, ew.SCALAR_COMPARISONS,
                                ["nansum", "nanargmax", "nancumprod", "ptp", "product", "top_k", "unique_all",
                                 "searchsorted", "nonzero", "bincount", "tril", "triu", "trace", "ravel",
                                 "flatten", "copy", "pad_left", "repeat", "tile", "packbits", "unpackbits",
                                 "geomspace", "ndim"]):
        assert name in exported, name
    x = rand(ABC)
    for fn in (lambda v: nx.nanmean(v, "a"), lambda v: nx.top_k(v, "c", 2)[1], lambda v: nx.tril(v, "b", "c"),
               lambda v: nx.tile(v, {"z": 2}), lambda v: nx.unique(v, Axis("u", 4))):
        assert last_eqn_is_named_axes(fn, x)
