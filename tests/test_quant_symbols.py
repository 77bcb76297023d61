"""SymbolicConstant (namax.quant.symbols): values against jnp.full, and results that stay
symbolic (no dense array of the constant's shape in the jaxpr)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import namax.quant as qax
from namax.quant.symbols import (SymbolicConstant, astype, broadcast_to, symbolic_full, symbolic_full_like,
                                 symbolic_ones, symbolic_zero_like, symbolic_zeros)

SHAPE = (3, 5)


def _c(value, shape=SHAPE, dtype=jnp.float32):
    return SymbolicConstant(value, shape=shape, dtype=dtype)


def _dense(x):
    return x.materialize() if isinstance(x, SymbolicConstant) else x


def _check(fn, *args, symbolic=True, rtol=1e-6):
    """``fn`` on the implicit args equals ``fn`` on dense ones; the result is (or is not) a constant."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no materialization allowed
        got = qax.use_implicit_args(fn)(*args)
    want = fn(*[_dense(a) for a in args])
    assert isinstance(got, SymbolicConstant) == symbolic, got
    got_dense = _dense(got)
    assert got_dense.shape == want.shape and got_dense.dtype == want.dtype
    np.testing.assert_allclose(np.asarray(got_dense, np.float64), np.asarray(want, np.float64), rtol=rtol)
    return got


def _big_outvars(fn, *args, shapes):
    """Equations of ``use_implicit_args(fn)``'s jaxpr producing an array of one of ``shapes``."""
    closed = jax.make_jaxpr(qax.use_implicit_args(fn))(*args)
    return [e for e in closed.jaxpr.eqns for v in e.outvars if tuple(v.aval.shape) in shapes]


@pytest.mark.parametrize("op", [lax.add, lax.sub, lax.mul, lax.div, lax.max, lax.min, lax.atan2, lax.pow,
                                lax.eq, lax.lt, lax.nextafter])
@pytest.mark.parametrize("a,b", [(0.0, 1.0), (1.0, np.pi), (np.pi, 2.5)])
def test_binops_of_constants_stay_constants(op, a, b):
    _check(op, _c(a), _c(b))


@pytest.mark.parametrize("fn", [jnp.sin, jnp.exp, jnp.tanh, jnp.negative, jnp.isfinite, jnp.sqrt, jnp.log1p,
                                lambda x: x ** 3, lambda x: x.astype(jnp.int32), lambda x: lax.round(x),
                                lambda x: jax.nn.sigmoid(x), lambda x: jnp.abs(x - 4.0)])
def test_unops(fn):
    _check(fn, _c(1.5))


def test_broadcasting_elementwise_and_scalar_literals():
    row = _c(2.0, shape=(5,))
    _check(lambda r, m: r + m * 3.0 - 1, row, _c(0.5))
    _check(lambda r: jnp.broadcast_to(r, (4, 5)) / 2, row)
    _check(lambda r: r[None, :] * jnp.ones((1, 1)), row, symbolic=False)  # a dense operand: dense result


@pytest.mark.parametrize("fn", [
    jnp.sum, jnp.prod, jnp.max, jnp.min, jnp.mean, jnp.argmax, jnp.argmin,
    lambda x: jnp.sum(x, axis=0), lambda x: jnp.prod(x, axis=1), lambda x: jnp.max(x, axis=(0,)),
    lambda x: jnp.all(x > 1), lambda x: jnp.any(x < 1, axis=1), lambda x: jnp.var(x, axis=0),
    lambda x: jnp.sum(x[:, :0], axis=1), lambda x: jnp.max(x[:0], axis=0, initial=-1.0),
])
def test_reductions(fn):
    _check(fn, _c(1.25), rtol=1e-5)


def test_integer_reductions_wrap_like_dense():
    c = _c(100, shape=(7, 3), dtype=jnp.int8)
    _check(jnp.sum, c)  # jnp.sum accumulates int8 in a wider type
    _check(lambda x: lax.reduce_sum_p.bind(x, axes=(0, 1), out_sharding=None), c)
    _check(lambda x: lax.reduce_prod_p.bind(x, axes=(0,), out_sharding=None), _c(3, shape=(9,), dtype=jnp.int32))
    _check(lambda x: lax.reduce_xor_p.bind(x, axes=(0,)), _c(5, shape=(3, 2), dtype=jnp.int32))


@pytest.mark.parametrize("fn", [
    lambda x: x.reshape(5, 3), lambda x: x.T, lambda x: x[1:, ::2], lambda x: x[None], lambda x: x[0],
    lambda x: jnp.flip(x, 0), lambda x: jnp.squeeze(x[:1], 0), lambda x: jnp.expand_dims(x, 1),
    lambda x: jnp.concatenate([x, x], 0), lambda x: jnp.pad(x, 1, constant_values=2.0),
    lambda x: lax.dynamic_slice(x, (1, 2), (2, 2)), lambda x: jnp.tile(x, (2, 1)),
    lambda x: jnp.where(True, x, 0.0), lambda x: x[jnp.array([0, 2])],
])
def test_shape_ops(fn):
    _check(fn, _c(2.0))


def test_dot_general_constant_and_dense():
    a, b = _c(0.5, shape=(2, 3, 4)), _c(2.0, shape=(2, 4, 5))
    _check(lambda x, y: jnp.einsum("bij,bjk->bik", x, y), a, b)
    x = jax.random.normal(jax.random.key(0), (2, 4, 5))
    for spec, args in [("bij,bjk->bik", (a, x)), ("bjk,bij->bik", (x, a)), ("bij,bjk->kbi", (a, x)),
                       ("ij,jk->ik", (_c(3.0, shape=(6, 4)), x[0])), ("ij,jk->ik", (x[0].T, _c(-1.0, shape=(4, 3))))]:
        _check(lambda p, q: jnp.einsum(spec, p, q), *args, symbolic=False, rtol=1e-5)
        assert not _big_outvars(lambda p, q: jnp.einsum(spec, p, q), *args,
                                shapes={tuple(a.shape) for a in args if isinstance(a, SymbolicConstant)})


def test_dense_operand_identities_cost_nothing():
    x = jax.random.normal(jax.random.key(1), SHAPE)
    for fn, c in [(lambda c, x: c + x, 0.0), (lambda c, x: x - c, 0.0), (lambda c, x: x * c, 1.0),
                  (lambda c, x: x / c, 1.0)]:
        _check(fn, _c(c), x, symbolic=False)
        prims = [e.primitive.name for e in jax.make_jaxpr(qax.use_implicit_args(fn))(_c(c), x).jaxpr.eqns]
        assert prims == []
    _check(lambda c, x: c - x, _c(0.0), x, symbolic=False)  # not an identity: computed
    # no NaN is dropped: 0 * nan is nan, as in the dense computation
    nan = jnp.full(SHAPE, jnp.nan)
    assert bool(jnp.all(jnp.isnan(qax.use_implicit_args(lambda c, x: c * x)(_c(0.0), nan))))


def test_results_stay_symbolic_in_the_jaxpr():
    c, row = _c(2.0, shape=(64, 128)), _c(1.0, shape=(128,))

    def f(c, row):
        y = jnp.exp(c * c + row) - 1.0          # elementwise and broadcasting
        y = jnp.transpose(y).reshape(128, 8, 8)  # shape ops
        return jnp.sum(y, axis=(1, 2)), jnp.max(y)  # reductions

    got = _check(lambda c, r: f(c, r)[0], c, row, rtol=1e-5)
    assert isinstance(got, SymbolicConstant)
    closed = jax.make_jaxpr(qax.use_implicit_args(f))(c, row)
    assert closed.jaxpr.eqns == []  # everything was folded while tracing

    x = jnp.ones((3,))
    # with a dense operand the only arrays are of the dense operand's size
    eqns = _big_outvars(lambda c, x: jnp.sum(c * c) + x, c, x, shapes={(64, 128)})
    assert eqns == []


def test_select_n():
    f = qax.use_implicit_args(lambda p, x, y: lax.select_n(p, x, y))
    assert f(True, _c(0.0), _c(1.0)).value == 1.0
    same = f(jnp.zeros(SHAPE, bool), _c(0.0), _c(0.0))
    assert isinstance(same, SymbolicConstant)
    pred = jax.random.bernoulli(jax.random.key(2), shape=SHAPE)
    np.testing.assert_array_equal(f(pred, _c(0.0), _c(1.0)), jnp.where(pred, 1.0, 0.0))


def test_jit_grad_vmap():
    c = _c(3.0)
    x = jax.random.normal(jax.random.key(3), SHAPE)
    f = qax.use_implicit_args(lambda c, x: jnp.sum(jnp.sin(c * x) + c))
    np.testing.assert_allclose(jax.jit(f)(c, x), jnp.sum(jnp.sin(3.0 * x) + 3.0), rtol=1e-5)
    np.testing.assert_allclose(jax.grad(f, argnums=1)(c, x), 3.0 * jnp.cos(3.0 * x), rtol=1e-5)
    out = jax.jit(qax.use_implicit_args(lambda c: c * 2))(c)
    assert isinstance(out, SymbolicConstant) and out.value == 6.0
    np.testing.assert_allclose(jax.vmap(f, in_axes=(None, 0))(c, x[:, None]),
                               jax.vmap(lambda x: jnp.sum(jnp.sin(c.materialize() * x) + c.materialize()))(x[:, None]),
                               rtol=1e-5)


def test_unhandled_primitive_materializes_with_warning():
    with pytest.warns(UserWarning, match="Primitive cumsum was not handled by class SymbolicConstant"):
        out = qax.use_implicit_args(lambda c: jnp.cumsum(c, axis=1))(_c(2.0))
    np.testing.assert_allclose(out, jnp.cumsum(jnp.full(SHAPE, 2.0), axis=1))


def test_helpers():
    x = jnp.ones((2, 3), jnp.bfloat16)
    assert symbolic_zero_like(x).dtype == jnp.bfloat16 and symbolic_zero_like(x).shape == (2, 3)
    assert symbolic_full_like(x, 2.5).dtype == jnp.float32  # the fill value's dtype, as in Qax
    np.testing.assert_array_equal(symbolic_full((2,), 7, jnp.int32).materialize(), jnp.full((2,), 7, jnp.int32))
    np.testing.assert_array_equal(symbolic_ones((3,)).materialize(), jnp.ones(3))
    assert broadcast_to(symbolic_zeros((3,)), (2, 3)).shape == (2, 3)
    assert astype(symbolic_ones((3,)), jnp.int8).dtype == jnp.int8
    updated = qax.utils.apply_updates({"w": jnp.arange(3.0)}, {"w": symbolic_full((3,), 0.5)})
    np.testing.assert_allclose(updated["w"], jnp.arange(3.0) + 0.5)


def test_bad_values():
    with pytest.raises(ValueError, match=r"must be a scalar, got an array of shape \(2,\)"):
        SymbolicConstant(jnp.ones(2), shape=(2,), dtype=jnp.float32)
    with pytest.raises(TypeError, match="must be known at trace time"):
        jax.jit(lambda v: SymbolicConstant(v, shape=(2,), dtype=jnp.float32).materialize())(1.0)
    with pytest.raises(TypeError, match="needs shape="):
        SymbolicConstant(1.0)
