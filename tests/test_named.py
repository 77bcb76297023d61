"""NamedArray: construction, pytree behaviour, shape queries and operators broadcasting by name."""

import doctest
import importlib
import operator

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

import namax as nx
from namax import Axis, NamedArray
from namax.named import align, broadcast_arrays

B, P, E = Axis("batch", 2), Axis("position", 3), Axis("embed", 4)


def rand(axes, seed=0, dtype=np.float32):
    shape = tuple(a.size for a in axes)
    return nx.named(np.random.default_rng(seed).normal(size=shape).astype(dtype), axes)


def by_name(x: NamedArray, axes) -> np.ndarray:
    """x's values laid out in the order of ``axes`` (x must have exactly these axes)."""
    return np.asarray(jnp.transpose(x.array, [x.axis_index(a) for a in axes]))


# --- construction -------------------------------------------------------------------------


def test_construction_and_shape_queries():
    arr = jnp.arange(24.0).reshape(2, 3, 4)
    x = NamedArray(arr, (B, P, E))
    assert x.shape == {"batch": 2, "position": 3, "embed": 4}
    assert list(x.shape) == ["batch", "position", "embed"]
    assert x.axis_names == ("batch", "position", "embed")
    assert x.ndim == 3 and x.size == 24 and x.dtype == jnp.float32 and x.nbytes == 96
    assert x.axis_index("position") == 1 and x.axis_index(E) == 2
    assert x.resolve_axis("embed") == E
    assert x.resolve_axis(("embed", B)) == (E, B)
    assert x.axis_size("position") == 3 and x.axis_size(B) == 2
    assert x.has_axis("batch") and x.has_axis((B, "embed")) and not x.has_axis(("batch", "head"))
    assert len(x) == 2


def test_single_axis_accepted_without_tuple():
    x = NamedArray(jnp.zeros(4), E)
    assert x.axes == (E,)


@pytest.mark.parametrize(
    "shape, axes, match",
    [
        ((2, 3), (B,), r"shape \(2, 3\) given 1 axes \(batch:2\)"),
        ((2, 3), (B, P, E), r"given 3 axes"),
        ((2, 5), (B, P), r"axis 'position' has size 3 but the array's dimension is 5"),
        ((2, 2), (B, B), r"Duplicate axis name 'batch'"),
        ((2, 3), ("batch", "position"), r"must be Axis objects.*'batch'"),
    ],
)
def test_construction_errors(shape, axes, match):
    with pytest.raises((ValueError, TypeError), match=match):
        NamedArray(jnp.zeros(shape), axes)


def test_named_takes_sizes_from_the_array_and_checks_given_axes():
    x = nx.named(np.ones((2, 3)), ("batch", P))
    assert x.axes == (B, P)
    assert isinstance(x.array, jax.Array)
    with pytest.raises(ValueError, match=r"needs 2 axes, got 1"):
        nx.named(np.ones((2, 3)), "batch")
    with pytest.raises(ValueError, match="'position' has size 3 but the array's dimension is 4"):
        nx.named(np.ones((2, 4)), (B, P))
    with pytest.raises(TypeError, match="expected an Axis or a name"):
        nx.named(np.ones((2, 3)), (B, 3))


def test_axis_queries_name_the_missing_axis_and_wrong_size():
    x = rand((B, P))
    with pytest.raises(ValueError, match=r"Axis 'head' not found in array with axes \(batch:2, position:3\)"):
        x.axis_index("head")
    with pytest.raises(ValueError, match=r"Axis 'position' has size 3 in the array but 7 was given"):
        x.resolve_axis(P.resize(7))
    with pytest.raises(ValueError, match="'head' not found"):
        x.axis_size("head")


def test_immutable_and_conversions():
    x = rand((B,))
    with pytest.raises(AttributeError, match="immutable"):
        x.axes = ()
    with pytest.raises(ValueError, match=r"axes \(batch:2\) is ambiguous"):
        bool(x)
    with pytest.raises(TypeError, match="only 0-d"):
        float(x)
    s = nx.sum(x)
    assert float(s) == pytest.approx(float(np.sum(x.array)))
    assert bool(s > -100.0) and int(nx.sum(nx.ones(B))) == 2
    with pytest.raises(TypeError, match="0-d"):
        len(s)
    assert x.astype(jnp.int32).dtype == jnp.int32 and x.astype(jnp.int32).axes == x.axes
    assert "batch:2" in repr(x)


# --- pytree -------------------------------------------------------------------------------


def test_pytree_round_trip_keeps_axes_static():
    x = rand((B, P))
    leaves, treedef = jax.tree_util.tree_flatten(x)
    assert len(leaves) == 1 and leaves[0] is x.array
    y = jax.tree_util.tree_unflatten(treedef, [leaves[0] * 2])
    assert isinstance(y, NamedArray) and y.axes == x.axes
    np.testing.assert_allclose(y.array, 2 * x.array)
    paths = jax.tree_util.tree_flatten_with_path({"w": x})[0]
    assert jax.tree_util.keystr(paths[0][0]) == "['w'].array"
    # the axes are part of the treedef: different names, different structure
    assert treedef != jax.tree_util.tree_structure(rand((B, P.alias("other"))))


def test_jit_takes_and_returns_named_arrays():
    x, y = rand((B, P)), rand((P, E), seed=1)
    f = lambda a, b: nx.dot(a, b, axis=P) * 2.0
    out = jax.jit(f)(x, y)
    assert isinstance(out, NamedArray) and out.axes == (B, E)
    np.testing.assert_allclose(out.array, 2 * np.asarray(x.array) @ np.asarray(y.array), rtol=1e-5)


def test_grad_of_function_of_named_arrays():
    x, y = rand((B, P)), rand((P, B), seed=1)

    def loss(a, b):
        return nx.sum(nx.tanh(a * b)).array

    ga, gb = jax.grad(loss, argnums=(0, 1))(x, y)
    assert isinstance(ga, NamedArray) and ga.axes == x.axes and gb.axes == y.axes
    ra, rb = jax.grad(lambda a, b: jnp.sum(jnp.tanh(a * b.T)), argnums=(0, 1))(x.array, y.array)
    np.testing.assert_allclose(ga.array, ra, rtol=1e-5)
    np.testing.assert_allclose(gb.array, rb, rtol=1e-5)
    gj = jax.jit(jax.grad(loss))(x, y)
    np.testing.assert_allclose(gj.array, ra, rtol=1e-5)


def test_equinox_filter_jit_and_module_fields():
    class Scale(eqx.Module):
        w: NamedArray

        def __call__(self, x):
            return self.w * x

    m = Scale(rand((E,)))
    x = rand((B, E), seed=2)
    out = eqx.filter_jit(lambda m, x: m(x))(m, x)
    assert out.axes == (E, B)
    np.testing.assert_allclose(by_name(out, (B, E)), np.asarray(x.array) * np.asarray(m.w.array), rtol=1e-6)
    grads = eqx.filter_grad(lambda m, x: nx.sum(m(x)).array)(m, x)
    np.testing.assert_allclose(grads.w.array, np.sum(np.asarray(x.array), axis=0), rtol=1e-5)


# --- operators ----------------------------------------------------------------------------

BINARY_OPS = [operator.add, operator.sub, operator.mul, operator.truediv, operator.pow]
COMPARE_OPS = [operator.lt, operator.le, operator.gt, operator.ge, operator.eq, operator.ne]


@pytest.mark.parametrize("op", BINARY_OPS + COMPARE_OPS)
def test_operators_broadcast_by_name(op):
    x = rand((B, P))
    y = rand((E, P), seed=1)
    if op is operator.pow:
        x = nx.abs(x)
    out = op(x, y)
    assert out.axes == (B, P, E)  # union, in order of first appearance
    xa, ya = np.asarray(x.array), np.asarray(y.array)
    ref = op(xa[:, :, None], ya.T[None, :, :])
    np.testing.assert_allclose(out.array, ref, rtol=1e-6)
    assert op(y, x).axes == (E, P, B)


@given(
    st.permutations([B, P, E]),
    st.permutations([B, P, E]),
    st.sampled_from(BINARY_OPS[:3] + COMPARE_OPS[:2]),
)
def test_operand_axis_order_does_not_change_values_by_name(order_a, order_b, op):
    base_a, base_b = rand((B, P, E)), rand((B, P, E), seed=1)
    a = base_a.rearrange(order_a)
    b = base_b.rearrange(order_b)
    ref = op(np.asarray(base_a.array), np.asarray(base_b.array))
    out = op(a, b)
    assert out.axes == tuple(order_a)
    np.testing.assert_allclose(by_name(out, (B, P, E)), ref, rtol=1e-6)
    jitted = jax.jit(op)(a, b)
    np.testing.assert_allclose(by_name(jitted, (B, P, E)), ref, rtol=1e-6)


@given(st.permutations([B, P, E]), st.sampled_from([(B,), (P, B), (E, P), ()]))
def test_broadcast_subset_of_axes(order, sub):
    a = rand(order)
    b = rand(sub, seed=3) if sub else nx.named(np.float32(1.5), ())
    out = a - b
    assert out.axes == tuple(order)
    full = by_name(a, (B, P, E))
    bb = np.asarray(b.array)
    if sub:
        bb = np.expand_dims(by_name(b, [ax for ax in (B, P, E) if ax in sub]),
                            [i for i, ax in enumerate((B, P, E)) if ax not in sub])
    np.testing.assert_allclose(by_name(out, (B, P, E)), full - bb, rtol=1e-6)


@pytest.mark.parametrize("scalar", [2, 2.5, np.float32(2.5), np.array(2.5), jnp.float32(2.5)])
def test_scalar_operands_on_either_side(scalar):
    x = rand((B, P))
    xa = np.asarray(x.array)
    for out, ref in [(x * scalar, xa * np.asarray(scalar)), (scalar * x, np.asarray(scalar) * xa),
                     (scalar - x, np.asarray(scalar) - xa), (x / scalar, xa / np.asarray(scalar))]:
        assert isinstance(out, NamedArray) and out.axes == (B, P)
        np.testing.assert_allclose(out.array, ref, rtol=1e-6)


def test_unary_operators_and_integer_operators():
    x = rand((B, P))
    np.testing.assert_allclose((-x).array, -np.asarray(x.array))
    np.testing.assert_allclose(abs(x).array, np.abs(x.array))
    assert (+x) is x
    i = nx.named(np.arange(1, 7, dtype=np.int32).reshape(2, 3), (B, P))
    j = nx.named(np.array([1, 2, 3], dtype=np.int32), (P,))
    ia, ja = np.arange(1, 7, dtype=np.int32).reshape(2, 3), np.array([1, 2, 3], dtype=np.int32)
    for op in [operator.floordiv, operator.mod, operator.and_, operator.or_, operator.xor]:
        np.testing.assert_array_equal(op(i, j).array, op(ia, ja))
        np.testing.assert_array_equal(op(7, i).array, op(7, ia))
    np.testing.assert_array_equal((~i).array, ~ia)


@pytest.mark.parametrize("other", [np.ones((2, 3), np.float32), jnp.ones(3), [1.0, 2.0, 3.0]])
def test_unnamed_non_scalar_operand_is_an_error(other):
    x = rand((B, P))
    with pytest.raises(TypeError, match="Cannot combine a NamedArray with .*name its axes first"):
        x + other
    with pytest.raises(TypeError, match="Cannot combine a NamedArray"):
        other * x if not isinstance(other, list) else x * other


def test_size_mismatch_names_axis_and_both_sizes():
    x = rand((B, P))
    y = rand((P.resize(5),))
    with pytest.raises(ValueError, match=r"Axis 'position' has size 3 .* size 5"):
        x + y
    with pytest.raises(ValueError, match=r"Axis 'position' has size 5 .* size 3"):
        jax.jit(operator.mul)(y, x)


def test_every_operator_result_is_tagged():
    x, y = rand((B, P)), rand((P,), seed=1)
    jaxpr = jax.make_jaxpr(lambda a, b: (a + b) * 2.0 < b)(x, y)
    tags = [e.params["axes"] for e in jaxpr.jaxpr.eqns if e.primitive.name == "named_axes"]
    assert tags == [("batch", "position")] * 3


def test_align_and_broadcast_arrays():
    x = rand((P, B))
    target = (B, E, P)
    a = align(x, target)
    assert a.shape == (2, 1, 3)
    np.testing.assert_array_equal(a[:, 0, :], np.asarray(x.array).T)
    with pytest.raises(ValueError, match=r"align: axes \['position'\]"):
        align(x, (B, E))
    with pytest.raises(ValueError, match=r"align: axis 'batch' has size 2 .* but size 7"):
        align(x, (B.resize(7), P))
    axes, raw = broadcast_arrays(x, 2.0, rand((E,)))
    assert axes == (P, B, E) and raw[1] == 2.0 and raw[0].shape == (3, 2, 1) and raw[2].shape == (1, 1, 4)


@pytest.mark.parametrize("module", ["namax.axis", "namax.named", "namax.tag", "namax.ops.elementwise",
                                    "namax.ops.reductions", "namax.ops.dot"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), verbose=False)
    assert result.attempted > 0 and result.failed == 0
