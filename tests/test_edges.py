"""Nothing silent at the edges: axis sizes, overflowing shapes, out-of-range indices and ids,
out-of-range loss targets, non-finite int4 weights, size-0 sharded dims (namax issue 15)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import namax as nx
import namax.nn as hnn
from namax import Axis
from namax.partitioning import pspec_for
from namax.quant import int4

A, E = Axis("a", 2), Axis("embed", 3)


def rand(axes, seed=0):
    return nx.named(np.random.default_rng(seed).normal(size=tuple(a.size for a in axes)).astype(np.float32), axes)


# --- axis sizes --------------------------------------------------------------------------------


@pytest.mark.parametrize("size, error, match", [
    (2.5, TypeError, r"Axis 'a': size must be an int >= 0, got 2\.5 \(float\)"),
    (np.float32(2.0), TypeError, r"Axis 'a': size must be an int >= 0, got .*2\.0"),
    (True, TypeError, r"Axis 'a': size must be an int >= 0, got the bool True"),
    (np.bool_(True), TypeError, r"Axis 'a': size must be an int >= 0, got .*True"),
    ("3", TypeError, r"Axis 'a': size must be an int >= 0, got '3'"),
    (-1, ValueError, r"Axis 'a': size must be an int >= 0, got -1"),
])
def test_axis_size_must_be_a_non_negative_int(size, error, match):
    with pytest.raises(error, match=match):
        Axis("a", size)


def test_axis_size_accepts_numpy_ints_as_python_ints():
    for size in (np.int64(3), np.int32(3), np.uint8(3), 3):
        ax = Axis("a", size)
        assert ax.size == 3 and type(ax.size) is int and ax == Axis("a", 3)
    assert Axis("a", 0).size == 0


# --- shape products that overflow ---------------------------------------------------------------


def test_overflowing_size_is_an_error_naming_the_axes():
    big = jax.eval_shape(lambda: nx.zeros((Axis("a", 2**32), Axis("b", 2**32))))
    with pytest.raises(ValueError, match=r"axes \(a:4294967296, b:4294967296\) has 18446744073709551616 elements"):
        big.size
    with pytest.raises(ValueError, match="int64 maximum"):
        big.nbytes
    ok = jax.eval_shape(lambda: nx.zeros((Axis("a", 2**31), Axis("b", 2**31))))
    assert ok.size == (2**31) * (2**31)  # past int32, exact in Python ints
    assert nx.zeros((A, E)).size == np.zeros((2, 3)).size


# --- indexing: concrete out of range is an error --------------------------------------------------


def test_concrete_out_of_range_index_raises():
    x = rand((A, E))
    a = np.asarray(x.array)
    np.testing.assert_array_equal(x["a", -1].array, a[-1])  # Python semantics, as Haliax
    np.testing.assert_array_equal(x["a", -2].array, a[-2])
    for i in (7, 2, -3, np.int64(7), jnp.int32(7), np.array(7)):
        with pytest.raises(IndexError, match=rf"Index {int(i)} is out of range for axis 'a' of size 2"):
            x["a", i]
    with pytest.raises(IndexError, match="Index 7 is out of range for axis 'a' of size 2"):
        nx.take(x, "a", 7)


def test_concrete_index_array_out_of_range_names_the_position():
    x = rand((A, E))
    ids = nx.named(jnp.array([[0, 1, 1], [1, 5, 0]]), (Axis("batch", 2), Axis("pos", 3)))
    with pytest.raises(IndexError, match=r"Index 5 is out of range for axis 'a' of size 2 \(at \{'batch': 1, 'pos': 1\}"):
        x["a", ids]
    with pytest.raises(IndexError, match="Index 5 is out of range for axis 'a' of size 2"):
        nx.take(x, "a", ids)
    good = nx.named(jnp.array([0, -1, 1]), Axis("pos", 3))
    np.testing.assert_array_equal(nx.take(x, "a", good).array, np.asarray(x.array)[[0, -1, 1]])


def test_concrete_slices_out_of_range_raise():
    P = Axis("position", 6)
    x = nx.arange(P)
    with pytest.raises(IndexError, match=r"dslice\(5, 2\) is out of range for axis 'position' of size 6"):
        x["position", nx.ds(5, 2)]
    with pytest.raises(IndexError, match=r"dslice\(5, 2\) is out of range"):
        x["position", nx.ds(jnp.int32(5), 2)]  # a concrete jax start is checked too
    with pytest.raises(IndexError, match="slice: start 5 with length 2 is out of range for axis 'position' of size 6"):
        nx.slice(x, "position", start=5, length=2)
    with pytest.raises(IndexError, match="slice: start -7 is out of range for axis 'position' of size 6"):
        nx.slice(x, "position", start=-7)
    with pytest.raises(IndexError, match="updated_slice: start 5 with update size 2 is out of range"):
        nx.updated_slice(x, {"position": 5}, nx.ones(P.resize(2), dtype=x.dtype))
    ref = np.arange(6)
    assert x["position", nx.ds(-2, 2)].array.tolist() == ref[-2:].tolist()
    assert nx.slice(x, "position", start=-3, length=2).array.tolist() == ref[-3:-1].tolist()
    got = nx.updated_slice(x, {"position": -1}, nx.full(P.resize(1), 9, dtype=x.dtype)).array
    want = ref.copy()
    want[-1] = 9
    np.testing.assert_array_equal(got, want)


def test_bad_mode_is_an_error():
    x = rand((A, E))
    with pytest.raises(ValueError, match="index: mode must be one of"):
        nx.index(x, {"a": 0}, mode="wrap")
    with pytest.raises(ValueError, match="updated_slice: mode must be one of"):
        nx.updated_slice(x, {"a": 0}, x["a", 0], mode="fill")


# --- indexing: traced indices follow mode= ----------------------------------------------------------


def test_traced_gather_fills_never_a_real_row():
    x = rand((A, E))
    a = np.asarray(x.array)
    f = jax.jit(lambda x, i: x["a", i])
    np.testing.assert_array_equal(f(x, jnp.int32(1)).array, a[1])
    assert np.isnan(np.asarray(f(x, jnp.int32(7)).array)).all()  # was: a[1], the last row
    assert np.isnan(np.asarray(f(x, jnp.int32(-3)).array)).all()
    np.testing.assert_array_equal(f(x, jnp.int32(-1)).array, a[-1])
    xi = nx.named(jnp.arange(6, dtype=jnp.int32).reshape(2, 3), (A, E))
    assert (np.asarray(f(xi, jnp.int32(7)).array) == np.iinfo(np.int32).min).all()
    xu = xi.astype(jnp.uint8)
    assert (np.asarray(f(xu, jnp.int32(7)).array) == np.iinfo(np.uint8).max).all()


def test_traced_index_array_modes_match_numpy():
    x = rand((A, E))
    a = np.asarray(x.array)
    raw = np.array([0, 5, -1, -4, 1])
    ids = nx.named(jnp.asarray(raw), Axis("pos", 5))
    fill = np.asarray(jax.jit(lambda x, i: nx.take(x, "a", i))(x, ids).array)
    inside = (raw >= -2) & (raw < 2)
    np.testing.assert_array_equal(fill[inside], a[raw[inside]])
    assert np.isnan(fill[~inside]).all()
    clip = jax.jit(lambda x, i: nx.take(x, "a", i, mode="clip"))(x, ids).array
    np.testing.assert_array_equal(clip, a[np.clip(np.where(raw < 0, raw + 2, raw), 0, 1)])
    minus = jax.jit(lambda x, i: nx.take(x, "a", i, mode="fill", fill_value=-5.0))(x, ids).array
    np.testing.assert_array_equal(np.asarray(minus)[~inside], np.full(((~inside).sum(), 3), -5.0))
    # explicit "fill"/"clip" apply to concrete indices too (the caller chose the rule): no error
    np.testing.assert_array_equal(nx.take(x, "a", ids, mode="clip").array, clip)
    np.testing.assert_array_equal(nx.index(x, {"a": 7}, mode="clip").array, a[1])
    assert np.isnan(np.asarray(nx.index(x, {"a": 7}, mode="fill").array)).all()
    # promise_in_bounds: in-range traced indices give the rows; concrete ones are still checked
    ok = nx.named(jnp.array([1, 0]), Axis("pos", 2))
    got = jax.jit(lambda x, i: nx.take(x, "a", i, mode="promise_in_bounds"))(x, ok).array
    np.testing.assert_array_equal(got, a[[1, 0]])
    with pytest.raises(IndexError, match="Index 5 is out of range"):
        nx.take(x, "a", ids, mode="promise_in_bounds")


def test_gather_gradient_unchanged_in_range():
    x = rand((A, E))
    ids = nx.named(jnp.array([1, 1, 0]), Axis("pos", 3))
    g = jax.jit(jax.grad(lambda a: jnp.sum(nx.take(nx.named(a, (A, E)), "a", ids).array ** 2)))(x.array)
    want = np.zeros((2, 3), np.float32)
    np.add.at(want, np.asarray(ids.array), 2 * np.asarray(x.array)[np.asarray(ids.array)])
    np.testing.assert_allclose(g, want, rtol=1e-6)


def _numpy_read(a, start, n, axis_size):
    s = start + axis_size if start < 0 else start
    out = np.full(n, np.nan)
    for k in range(n):
        if 0 <= s + k < axis_size:
            out[k] = a[s + k]
    return out


def test_traced_dslice_and_slice_fill_past_the_end():
    P = Axis("position", 6)
    x = nx.arange(P).astype(jnp.float32)
    ds = jax.jit(lambda x, i: x["position", nx.ds(i, 3)])
    sl = jax.jit(lambda x, i: nx.slice(x, "position", start=i, length=3))
    clip = jax.jit(lambda x, i: nx.slice(x, "position", start=i, length=3, mode="clip"))
    for start in (0, 3, 4, 5, 6, 9, -1, -2, -8):
        ref = _numpy_read(np.arange(6.0), start, 3, 6)
        np.testing.assert_array_equal(ds(x, jnp.int32(start)).array, ref)
        np.testing.assert_array_equal(sl(x, jnp.int32(start)).array, ref)
        np.testing.assert_array_equal(clip(x, jnp.int32(start)).array,
                                      jax.lax.dynamic_slice(jnp.arange(6.0), (jnp.int32(start),), (3,)))


def test_traced_updated_slice_drops_the_outside_part():
    L, P = Axis("layer", 2), Axis("position", 6)
    x = nx.zeros((L, P))
    u = nx.arange(P.resize(3)).astype(jnp.float32) + 1
    drop = jax.jit(lambda x, i: nx.updated_slice(x, {"layer": 1, "position": i}, u))
    clip = jax.jit(lambda x, i: nx.updated_slice(x, {"layer": 1, "position": i}, u, mode="clip"))
    for start in (0, 3, 4, 5, 7, -1, -2, -7):
        want = np.zeros((2, 6), np.float32)
        s = start + 6 if start < 0 else start
        for j in range(3):
            if 0 <= s + j < 6:
                want[1, s + j] = j + 1
        np.testing.assert_array_equal(drop(x, jnp.int32(start)).array, want)
        np.testing.assert_array_equal(
            clip(x, jnp.int32(start)).array,
            jax.lax.dynamic_update_slice(jnp.zeros((2, 6)), jnp.arange(1.0, 4.0)[None], (1, start)))


# --- embedding ---------------------------------------------------------------------------------------


def test_embedding_out_of_range_ids():
    V, D, Pos = Axis("vocab", 5), Axis("embed", 4), Axis("position", 3)
    emb = hnn.Embedding.init(V, D, key=jax.random.key(0))
    table = np.asarray(emb.weight.rearrange(("vocab", "embed")).array)
    ids = nx.named(jnp.array([1, 9, 4]), Pos)
    with pytest.raises(IndexError, match=r"Embedding: id 9 is out of range for Vocab 'vocab' of size 5 \(at \{'position': 1\}"):
        emb(ids)
    with pytest.raises(IndexError, match="Embedding: id -1 is out of range"):
        emb(nx.named(jnp.array([1, -1, 4]), Pos))
    lookup = jax.jit(lambda e, i: e(i).rearrange(("position", "embed")).array)
    for bad in (9, -1):
        rows = np.asarray(lookup(emb, nx.named(jnp.array([1, bad, 4]), Pos)))
        np.testing.assert_array_equal(rows[[0, 2]], table[[1, 4]])
        assert np.isnan(rows[1]).all()  # was: row 4 (for 9), row 4 (for -1)
    clip = emb(ids, mode="clip").rearrange(("position", "embed")).array
    np.testing.assert_array_equal(clip, table[[1, 4, 4]])
    zero = emb(ids, mode="fill", fill_value=0.0).rearrange(("position", "embed")).array
    np.testing.assert_array_equal(zero, np.stack([table[1], np.zeros(4, np.float32), table[4]]))


# --- losses ----------------------------------------------------------------------------------------------


def _np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_cross_entropy_out_of_range_target():
    B, L = Axis("batch", 3), Axis("label", 3)
    logits = rand((B, L))
    targets = nx.named(jnp.array([0, 7, 2]), B)
    with pytest.raises(IndexError, match=r"cross_entropy_loss: id 7 is out of range for axis 'label' of size 3"):
        hnn.cross_entropy_loss(logits, L, targets)
    per = jax.jit(lambda l, t: hnn.cross_entropy_loss(l, L, t, reduction=None))(logits, targets).array
    ref = -_np_log_softmax(np.asarray(logits.array))[[0, 2], [0, 2]]
    np.testing.assert_allclose(np.asarray(per)[[0, 2]], ref, rtol=1e-6)
    assert np.isnan(per[1])  # was: the loss of class 2
    assert np.isnan(jax.jit(lambda l, t: hnn.cross_entropy_loss(l, L, t))(logits, targets).array)
    neg = nx.named(jnp.array([0, -1, 2]), B)
    assert np.isnan(jax.jit(lambda l, t: hnn.cross_entropy_loss(l, L, t, reduction=None))(logits, neg).array[1])
    # a masked-out position may hold any id (padding): no error, and it does not count
    mask = nx.named(jnp.array([True, False, True]), B)
    for fn in (hnn.cross_entropy_loss, jax.jit(hnn.cross_entropy_loss, static_argnums=1)):
        got = fn(logits, L, targets, where=mask)
        np.testing.assert_allclose(got.array, ref.mean(), rtol=1e-6)


def test_one_hot_out_of_range():
    B, L = Axis("batch", 2), Axis("label", 3)
    ids = nx.named(jnp.array([2, 7]), B)
    with pytest.raises(IndexError, match=r"one_hot: id 7 is out of range for axis 'label' of size 3 \(at \{'batch': 1\}"):
        hnn.one_hot(ids, L)
    got = np.asarray(jax.jit(lambda i: hnn.one_hot(i, L))(ids).array)
    np.testing.assert_array_equal(got[0], np.eye(3)[2])
    assert np.isnan(got[1]).all()  # was: an all-zero row
    ints = np.asarray(jax.jit(lambda i: hnn.one_hot(i, L, dtype=jnp.int32))(ids).array)
    assert (ints[1] == np.iinfo(np.int32).min).all()
    np.testing.assert_array_equal(hnn.one_hot(ids, L, mode="zeros").array, np.asarray(jax.nn.one_hot(ids.array, 3)))


@pytest.mark.parametrize("bad", [2.0, -0.5, float("nan")])
def test_binary_cross_entropy_targets_outside_unit_interval(bad):
    B = Axis("batch", 3)
    logits = rand((B,))
    t = nx.named(jnp.array([0.0, bad, 1.0]), B)
    with pytest.raises(ValueError, match=r"binary_cross_entropy_loss: target .* is outside \[0, 1\] \(at \{'batch': 1\}"):
        hnn.binary_cross_entropy_loss(logits, t)
    per = np.asarray(jax.jit(lambda l, t: hnn.binary_cross_entropy_loss(l, t, reduction=None))(logits, t).array)
    z, tt = np.asarray(logits.array, np.float64), np.array([0.0, 0.0, 1.0])
    ref = np.maximum(z, 0) - z * tt + np.log1p(np.exp(-np.abs(z)))
    np.testing.assert_allclose(per[[0, 2]], ref[[0, 2]], rtol=1e-5)
    assert np.isnan(per[1])
    mask = nx.named(jnp.array([True, False, True]), B)
    got = hnn.binary_cross_entropy_loss(logits, t, where=mask)  # the bad target is masked out: fine
    np.testing.assert_allclose(got.array, ref[[0, 2]].mean(), rtol=1e-5)


# --- int4.quantize -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_int4_refuses_non_finite_weights(bad):
    w = jax.random.normal(jax.random.key(0), (256, 8)).at[130, 3].set(bad)
    with pytest.raises(ValueError, match=r"non-finite value .* at index \(130, 3\)"):
        int4.quantize_array(w)
    with pytest.raises(ValueError, match=r"at index \(130, 3\).*\[at \['layer'\]\['w'\]\]"):
        int4.quantize({"layer": {"w": w}})
    named = nx.named(w, (Axis("embed", 256), Axis("mlp", 8)))
    with pytest.raises(ValueError, match=r"at index \{'embed': 130, 'mlp': 3\}"):
        int4.quantize_named(named, "embed")
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        int4.quantize_array(w, nonfinite="ignore")


@pytest.mark.parametrize("symmetric", [True, False])
def test_int4_nonfinite_zero_and_jit_rule(symmetric):
    w = jax.random.normal(jax.random.key(1), (256, 8))
    bad = w.at[130, 3].set(jnp.nan)
    dense = jax.jit(lambda q: q.materialize())
    zeroed = np.asarray(dense(int4.quantize_array(w.at[130, 3].set(0.0), symmetric=symmetric)))
    got = np.asarray(dense(int4.quantize_array(bad, symmetric=symmetric, nonfinite="zero")))
    np.testing.assert_array_equal(got, zeroed)
    # under jit the weight cannot be checked: the poisoned group (rows 128..255, column 3) is NaN,
    # every other group is the same as quantizing the clean weight
    traced = np.asarray(dense(jax.jit(lambda w: int4.quantize_array(w, symmetric=symmetric))(bad)))
    assert np.isnan(traced[128:, 3]).all()
    clean = np.asarray(dense(int4.quantize_array(w, symmetric=symmetric)))
    others = np.ones_like(traced, bool)
    others[128:, 3] = False
    np.testing.assert_array_equal(traced[others], clean[others])


# --- size-0 dims are never sharded ----------------------------------------------------------------------------


def test_size_zero_dims_are_replicated():
    mesh = jax.make_mesh((2,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,), devices=jax.devices()[:2])
    mapping = {"batch": "data", "embed": "data"}
    assert pspec_for(("batch", "embed"), (0, 4), mapping, mesh) == jax.sharding.PartitionSpec(None, "data")
    assert pspec_for(("batch", "embed"), (0, 4), mapping, mesh, strict=False) == jax.sharding.PartitionSpec(None, "data")
    assert pspec_for(("batch",), (0,), {"batch": "data"}, mesh) == jax.sharding.PartitionSpec()
    with pytest.raises(nx.partitioning.ShardingError, match="mapped to mesh axis 'model'"):
        pspec_for(("batch",), (0,), {"batch": "model"}, mesh)  # the mapping is still checked
    x = nx.zeros((Axis("batch", 0), Axis("embed", 4)))
    placed = nx.shard(x, mapping, mesh)
    assert placed.array.sharding.spec == jax.sharding.PartitionSpec(None, "data")
    assert placed.array.shape == (0, 4)


def test_at_updates_never_clamp():
    """``x.at[...]`` follows the indexing rule: a concrete out-of-range index raises; a traced
    block start past the end drops those positions (never clamps onto real rows)."""
    A = nx.Axis("a", 2)
    x = nx.zeros(A)
    with pytest.raises(IndexError, match=r"at: dslice\(1, 2\) is out of range for axis 'a' of size 2"):
        x.at["a", nx.ds(1, 2)].set(1.0)
    with pytest.raises(IndexError, match="Index 5 is out of range for axis 'a' of size 2"):
        x.at["a", nx.named(jnp.array([0, 5]), "i")].get()
    with pytest.raises(IndexError, match="Index 5 is out of range for axis 'a' of size 2"):
        x.at["a", jnp.array(5)].set(1.0)
    got = jax.jit(lambda x, s: x.at["a", nx.ds(s, 2)].set(1.0))(x, 1).array
    np.testing.assert_array_equal(got, np.asarray(jnp.zeros(2).at[jnp.array([1, 2])].set(1.0)))
    np.testing.assert_array_equal(got, [0.0, 1.0])


def test_implicit_array_size_does_not_wrap():
    """An implicit array's size is an exact count (a symbolic constant can be huge)."""
    import namax.quant as qax

    big = qax.symbols.SymbolicConstant(1.0, shape=(2**32, 2**32), dtype=jnp.float32)
    assert big.size == 2**64
