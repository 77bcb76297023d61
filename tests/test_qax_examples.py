"""Qax's example programs (zeros, constants, identity, minimal LoRA, combining, nesting,
nullable arrays) as written for Qax, run on ``namax.quant``: values against the dense
computation; plus Qax's modules (constants, primitives, utils), old-JAX-style handlers,
nesting two and three deep, and the Quax spellings."""

import dataclasses
import importlib.util
import pathlib
import sys
import warnings
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

import namax.quant as qax
from namax.quant import constants, primitives, utils
from namax.quant.nullable import NullableArray
from namax.quant.symbols import SymbolicConstant, symbolic_full, symbolic_zeros

_PATH = pathlib.Path(__file__).resolve().parents[1] / "examples" / "qax_examples.py"


@pytest.fixture(scope="module")
def ex():
    spec = importlib.util.spec_from_file_location("qax_examples_under_test", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _quiet(fn, *args):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = fn(*args)
    return out, [str(r.message) for r in rec]


def _dense(x):
    return qax.materialize_nested(x, full=True)


# -- the example program --------------------------------------------------------------------------

def test_every_example_matches_dense(ex):
    diffs = ex.run_all()
    assert set(diffs) >= {"zeros", "const", "const (nested)", "lora", "identity", "identity (LoRA over Eye)",
                          "combining", "nullable (values)", "nullable (mask)", "nesting (values)", "nesting (mask)",
                          "symbols"}
    assert all(d <= 1e-4 for d in diffs.values()), diffs


def test_zeros_example_handlers_and_warnings(ex):
    z = ex.ImplicitZeros(shape=(2, 3))
    both, msgs = _quiet(qax.use_implicit_args(lambda x, y: x + y), z, z)
    assert isinstance(both, ex.ImplicitZeros) and msgs == []
    out, msgs = _quiet(jax.jit(qax.use_implicit_args(ex.zeros_program)), z, jnp.ones((2, 3)))
    np.testing.assert_array_equal(out, ex.zeros_program(jnp.zeros((2, 3)), jnp.ones((2, 3))))
    assert msgs == []  # x + ones is dense: nothing implicit reaches the sum
    out, msgs = _quiet(jax.jit(qax.use_implicit_args(ex.zeros_program)), z, z)
    np.testing.assert_array_equal(out, ex.zeros_program(jnp.zeros((2, 3)), jnp.zeros((2, 3))))
    # only the sum (no handler in the example) materializes
    assert msgs == ["Primitive reduce_sum was not handled by class ImplicitZeros, so implicit args will be "
                    "materialized."]


def test_const_example_old_jax_handler_runs(ex):
    # const_unop calls default_handler(primitive, arg.value) without the `accuracy` that
    # jax 0.10 requires for sin: filled in with its default
    shape = (5, 7)
    a, b = ex.ImplicitConst(3.0, shape=shape), ex.ImplicitConst(2.0, shape=shape)
    out, msgs = _quiet(qax.use_implicit_args(lambda a, b: jnp.sum(jnp.sin(a * b))), a, b)
    assert msgs == [] and isinstance(out, ex.ImplicitConst)
    np.testing.assert_allclose(_dense(out), jnp.sum(jnp.sin(jnp.full(shape, 6.0))), rtol=1e-5)
    for fn in (jnp.cos, jnp.exp):
        out = qax.use_implicit_args(fn)(a)
        assert isinstance(out, ex.ImplicitConst)
        np.testing.assert_allclose(_dense(out), fn(jnp.full(shape, 3.0)), rtol=1e-6)


def test_const_nested_two_deep(ex):
    shape = (5, 7)
    nested = ex.ImplicitConst(value=ex.ImplicitConst(2.0, shape=()), shape=shape)
    assert utils.implicit_depth(nested) == 2
    out, msgs = _quiet(qax.use_implicit_args(lambda a, b: jnp.sin(a * b)), ex.ImplicitConst(3.0, shape=shape),
                       nested)
    assert msgs == []
    # the outer handlers ran on the inner constant through its own handlers: still two deep
    assert isinstance(out, ex.ImplicitConst) and isinstance(out.value, ex.ImplicitConst)
    # materialize runs jnp.full on the inner constant, which has no broadcast handler
    with pytest.warns(UserWarning, match="Primitive broadcast_in_dim was not handled by class ImplicitConst"):
        dense = _dense(out)
    np.testing.assert_allclose(dense, jnp.sin(jnp.full(shape, 6.0)), rtol=1e-6)


def test_minimal_lora_matches_dense_without_materializing(ex):
    k = jax.random.split(jax.random.key(0), 4)
    w = ex.LoraMatrix(jax.random.normal(k[0], (8, 6)), jax.random.normal(k[1], (8, 2)),
                      jax.random.normal(k[2], (6, 2)))
    x = jax.random.normal(k[3], (3, 8))
    out, msgs = _quiet(qax.use_implicit_args(lambda x, w: x @ w), x, w)
    assert msgs == []
    np.testing.assert_allclose(out, x @ (w.W + w.A @ w.B.T), rtol=1e-5, atol=1e-5)
    # x on the right is not the handled case: NotImplemented, then materialized
    out, msgs = _quiet(qax.use_implicit_args(lambda w, y: w @ y), w, x.T[:6])
    np.testing.assert_allclose(out, (w.W + w.A @ w.B.T) @ x.T[:6], rtol=1e-5, atol=1e-5)
    assert msgs == ["Primitive dot_general was not handled by class LoraMatrix, so implicit args will be materialized."]


def test_identity_example(ex):
    f = qax.use_implicit_args(lambda a, b: a @ b)
    x = jnp.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(f(ex.Eye(3), x), x)
    assert isinstance(f(ex.Eye(3), ex.Eye(3)), ex.Eye)
    assert ex.Eye(4, dtype=jnp.bfloat16).dtype == jnp.bfloat16


def test_lora_over_symbolic_constants_two_deep(ex):
    w = jax.random.normal(jax.random.key(1), (4, 6))
    lora = ex.LoraMatrix(W=w, A=symbolic_zeros((4, 3)), B=symbolic_full((6, 3), 2.0))
    x = jax.random.normal(jax.random.key(2), (5, 4))
    out, msgs = _quiet(qax.use_implicit_args(lambda x, w: x @ w), x, lora)
    assert msgs == []
    np.testing.assert_allclose(out, x @ w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(qax.materialize_nested(lora, full=True), w + 0.0, rtol=1e-6)
    # materialize_nested without full: one layer, through the constants' handlers
    assert isinstance(qax.materialize_nested(lora), jax.Array)


def test_combining_example(ex):
    shape = (2, 3)
    zeros, const = ex.ImplicitZeros(shape=shape, dtype=jnp.float32), ex.ImplicitConst(1.0, shape=shape)
    ex.register_combined_handler()
    for args in [(const, zeros), (zeros, const)]:
        out, msgs = _quiet(qax.use_implicit_args(lambda x, y: x * y), *args)
        assert isinstance(out, ex.ImplicitZeros) and msgs == []
    both = qax.use_implicit_args(lambda x, y: x * y)(const, ex.ImplicitConst(2.0, shape=shape))
    assert isinstance(both, ex.ImplicitConst)  # the pair handler does not claim const * const
    np.testing.assert_array_equal(_dense(both), jnp.full(shape, 2.0))


def test_nesting_example_nullable_over_zeros(ex):
    shape = (2, 3)
    mx = jnp.asarray([[True, False, True], [False, True, True]])
    my = jnp.asarray([[True, True, True], [False, False, True]])
    x = NullableArray(val=ex.ImplicitZeros(shape=shape), mask=mx)
    y = NullableArray(val=jnp.ones(shape), mask=my)
    out, msgs = _quiet(jax.jit(qax.use_implicit_args(lambda x, y: x * y + 3)), x, y)
    assert msgs == []
    np.testing.assert_array_equal(out.val, jnp.zeros(shape) * jnp.ones(shape) + 3)
    np.testing.assert_array_equal(out.mask, mx & my)
    inner, _ = _quiet(qax.use_implicit_args(lambda x, y: x * y), x, y)
    assert isinstance(inner.val, ex.ImplicitZeros)  # the zeros' own mul handler ran inside


# -- nullable arrays ---------------------------------------------------------------------------------

def test_nullable_propagates_masks():
    k = jax.random.split(jax.random.key(3), 4)
    xv, yv = jax.random.normal(k[0], (4, 5)), jax.random.normal(k[1], (4, 5))
    xm, ym = jax.random.bernoulli(k[2], 0.7, (4, 5)), jax.random.bernoulli(k[3], 0.7, (4, 5))
    x, y = NullableArray(xv, xm), NullableArray(yv, ym)
    cases = [
        (lambda a, b: jnp.sin(a) * b - 1.0, lambda a, b: jnp.sin(a) * b - 1.0, xm & ym),
        (lambda a, b: jnp.sum(a + b, axis=1), lambda a, b: jnp.sum(a + b, axis=1), jnp.all(xm & ym, axis=1)),
        (lambda a, b: jnp.max(a, axis=0), lambda a, b: jnp.max(a, axis=0), jnp.all(xm, axis=0)),
        (lambda a, b: a.T[1:], lambda a, b: a.T[1:], xm.T[1:]),
        (lambda a, b: jnp.cumsum(a, axis=1), lambda a, b: jnp.cumsum(a, axis=1),
         jnp.cumprod(xm.astype(jnp.int32), axis=1).astype(bool)),
        (lambda a, b: jnp.where(a > 0, a, b), lambda a, b: jnp.where(a > 0, a, b), xm & ym),
    ]
    for fn, dense_fn, mask in cases:
        out, msgs = _quiet(qax.use_implicit_args(fn), x, y)
        assert msgs == [] and isinstance(out, NullableArray)
        np.testing.assert_allclose(out.val, dense_fn(xv, yv), rtol=1e-6)
        np.testing.assert_array_equal(out.mask, mask)
    # unhandled: materialized to the values (mask dropped) with the usual warning
    out, msgs = _quiet(qax.use_implicit_args(lambda a, b: a @ b.T), x, y)
    np.testing.assert_allclose(out, xv @ yv.T, rtol=1e-5)
    assert msgs and "dot_general was not handled by class NullableArray" in msgs[0]


def test_nullable_bad_mask():
    with pytest.raises(ValueError, match=r"mask shape \(3,\) differs from val shape \(2,\)"):
        NullableArray(jnp.ones(2), jnp.ones(3, bool))
    with pytest.raises(TypeError, match="mask must be boolean, got dtype float32"):
        NullableArray(jnp.ones(2), jnp.ones(2))


# -- nesting three deep --------------------------------------------------------------------------------

@dataclasses.dataclass
class Doubled(qax.ImplicitArray):
    """2 * x, with x possibly implicit."""
    x: qax.ArrayValue

    def materialize(self):
        return 2 * self.x


@qax.primitive_handler("mul")
def _doubled_mul(primitive, d: Doubled, y: jax.Array):
    return Doubled(d.x * y)  # an implicit child goes through its own mul handler


def test_three_deep():
    leaf = SymbolicConstant(1.5, shape=(3, 4), dtype=jnp.float32)
    three = Doubled(Doubled(leaf))
    assert utils.implicit_depth(three) == utils.count_depth(three) == 3
    dense = 4 * leaf.materialize()
    np.testing.assert_allclose(qax.materialize_nested(three, full=True), dense)
    np.testing.assert_allclose(qax.materialize(three), dense)
    one = qax.materialize_nested(three)
    assert isinstance(one, Doubled) and isinstance(one.x, SymbolicConstant)  # one layer: 2 * Doubled(c)

    out, msgs = _quiet(qax.use_implicit_args(lambda a: a * 3.0), three)
    assert msgs == []
    assert isinstance(out, Doubled) and isinstance(out.x, Doubled) and isinstance(out.x.x, SymbolicConstant)
    np.testing.assert_allclose(_dense(out), dense * 3.0)

    x = jax.random.normal(jax.random.key(4), (3, 4))
    out, msgs = _quiet(jax.jit(qax.use_implicit_args(lambda a, x: jnp.sum(a * x) + jnp.sin(a))), three, x)
    np.testing.assert_allclose(out, jnp.sum(dense * x) + jnp.sin(dense), rtol=1e-5)
    grad = jax.grad(lambda x: jnp.sum(qax.use_implicit_args(lambda a, x: a * x)(three, x).x.x))(x)
    np.testing.assert_allclose(grad, jnp.full((3, 4), 1.5))


# -- Qax's modules ------------------------------------------------------------------------------------

def test_constants_are_primitives_of_this_jax():
    names = (constants.COMMUTATIVE_OPS | constants.ELEMENTWISE_UNOPS | constants.ELEMENTWISE_BINOPS
             | constants.REDUCTION_OPS | constants.CUMULATIVE_REDUCTION_OPS | constants.SHAPE_OPS)
    for n in names:
        assert primitives.get_lax_primitive_by_name(n).name == n
    with pytest.raises(ValueError, match="unknown primitive name 'bitwise_and'"):
        primitives.get_lax_primitive_by_name("bitwise_and")


def test_old_jax_params_filled_and_not_passed():
    assert primitives.primitive_defaults("exp") == {"accuracy": None}
    x = jnp.linspace(0.1, 1.0, 4)
    # default_handler without accuracy (jax < 0.5 style) binds and lowers
    np.testing.assert_allclose(jax.jit(lambda x: qax.default_handler(lax.exp_p, x))(x), jnp.exp(x))
    np.testing.assert_allclose(qax.default_handler(lax.reduce_and_p, x > 0, axes=(0,), out_sharding=None), True)

    @dataclasses.dataclass
    class Box(qax.ImplicitArray):
        v: qax.ArrayValue

        def materialize(self):
            return self.v

    @qax.primitive_handler("exp")
    def _exp(primitive, b: Box):  # no accuracy in the signature
        return Box(qax.default_handler(primitive, b.v))

    out = qax.use_implicit_args(jnp.exp)(Box(x))
    assert isinstance(out, Box)
    np.testing.assert_allclose(out.v, jnp.exp(x))
    # a non-default value the handler cannot take is an error naming it, not silently dropped
    with pytest.raises(TypeError, match=r"does not take the parameter accuracy=<AccuracyMode.HIGHEST"):
        qax.use_implicit_args(lambda b: lax.exp(b, accuracy=lax.AccuracyMode.HIGHEST))(Box(x))


def test_utils_flatten_prefix_emptynode():
    @dataclasses.dataclass
    class Pair(qax.ImplicitArray):
        a: qax.ArrayValue
        b: qax.ArrayValue

        def materialize(self):
            return qax.materialize(self.a)

    for depth in range(4):
        c = jnp.arange(4.0)
        for d in range(depth):
            c = Pair(c, jnp.zeros(d))
        tree = [{"x": c}, {"y": c}]
        flat, struct = utils.flatten_one_layer(tree)
        assert jax.tree_util.tree_structure(jax.tree_util.tree_unflatten(struct, flat)) == \
            jax.tree_util.tree_structure(tree)
        assert utils.implicit_depth(flat) == max(depth - 1, 0)

    c1 = Pair(Pair(jnp.zeros(4), jnp.zeros(4)), Pair(jnp.zeros(3), jnp.zeros(5)))
    c3 = Pair(Pair(jnp.zeros(4), jnp.zeros(3)), Pair(jnp.zeros(3), jnp.zeros(5)))
    p1, p3 = [t(c) for t, c in zip(utils.get_common_prefix_transforms([c1, c3]), [c1, c3])]
    expected = jax.tree_util.tree_structure(Pair(jnp.zeros(4), Pair(jnp.zeros(3), jnp.zeros(5))))
    assert jax.tree_util.tree_structure(p1) == jax.tree_util.tree_structure(p3) == expected
    with pytest.raises(ValueError, match=r"tree 1 has a leaf of \(shape, dtype\) \(\(3,\), dtype\('float32'\)\)"):
        utils.get_common_prefix_transforms([jnp.zeros(4), jnp.zeros(3)])

    assert jax.tree_util.tree_leaves({"a": qax.EmptyNode}) == [] and qax.EmptyNode is utils._EmptyNodeCls()
    assert utils.tree_leaves_with_implicit([Pair(jnp.zeros(1), jnp.zeros(1)), qax.EmptyNode])[1] is qax.EmptyNode


def test_freeze_keys_on_nested_params(ex):
    p = {"w": ex.LoraMatrix(jnp.ones((3, 2)), jnp.ones((3, 1)), jnp.ones((2, 1))), "b": jnp.ones(2)}
    opt = qax.freeze_keys(optax.sgd(0.5), ex.LoraMatrix, ["W"])
    grads = jax.tree_util.tree_map(jnp.ones_like, p)
    updates, _ = opt.update(grads, opt.init(p), p)
    np.testing.assert_array_equal(updates["w"].W, jnp.zeros((3, 2)))
    np.testing.assert_array_equal(updates["w"].A, -0.5 * jnp.ones((3, 1)))
    np.testing.assert_array_equal(updates["b"], -0.5 * jnp.ones(2))
    with pytest.raises(ValueError, match=r"LoraMatrix has no array fields \['Q'\]"):
        qax.freeze_keys(optax.sgd(0.5), ex.LoraMatrix, ["Q"])


# -- handler selection: precedence, commute_ops, Quax spellings ----------------------------------------

def test_precedence_and_commute_ops():
    class Tag(qax.ImplicitArray, commute_ops=False):
        default_dtype = jnp.float32

        def materialize(self):
            return jnp.full(self.shape, 5.0, self.dtype)

    @qax.primitive_handler("sub", precedence=1)
    def _high(primitive, t: Tag, y: jax.Array):
        return jnp.full(y.shape, 1.0)

    @qax.primitive_handler("sub")
    def _low(primitive, t: Tag, y: jax.Array):
        return jnp.full(y.shape, 2.0)  # registered later, but lower precedence

    t, x = Tag(shape=(2,)), jnp.ones(2)
    np.testing.assert_array_equal(qax.use_implicit_args(lambda a, b: a - b)(t, x), jnp.full(2, 1.0))

    @qax.primitive_handler("mul")
    def _mul(primitive, a: Tag, b: jax.Array):
        return jnp.zeros(b.shape)

    np.testing.assert_array_equal(qax.use_implicit_args(lambda a, b: a * b)(t, x), jnp.zeros(2))
    out, msgs = _quiet(qax.use_implicit_args(lambda a, b: b * a), t, x)  # not swapped for this class
    np.testing.assert_array_equal(out, jnp.full(2, 5.0))
    assert msgs == ["Primitive mul was not handled by class Tag, so implicit args will be materialized."]


def test_quax_spellings():
    class Threes(qax.ImplicitArray):
        default_dtype = jnp.float32

        def materialize(self):
            return jnp.full(self.shape, 3.0, self.dtype)

    @qax.register(lax.neg_p)
    def _neg(primitive, t: Threes):
        return jnp.full(t.shape, -3.0, t.dtype)

    out, msgs = _quiet(qax.quaxify(lambda t: -t), Threes(shape=(2,)))
    assert msgs == []
    np.testing.assert_array_equal(out, -Threes(shape=(2,)).materialize())


def test_shape_dtype_hooks_and_uninitialized():
    @dataclasses.dataclass
    class Fill(qax.ImplicitArray):
        v: qax.ArrayValue

        def compute_dtype(self):
            return jnp.result_type(self.v)

        def materialize(self):
            return jnp.full(self.shape, self.v, self.dtype)

    f = Fill(jnp.int8(3), shape=(2,))
    assert f.dtype == jnp.int8
    np.testing.assert_array_equal(qax.materialize(f), jnp.full((2,), 3, jnp.int8))
    assert issubclass(qax.UninitializedAval, TypeError)
    with pytest.raises(qax.UninitializedAval, match="Zeros has no array children, so shape= must be given"):
        qax.Zeros()
