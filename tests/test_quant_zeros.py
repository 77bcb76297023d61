"""Symbolic Zeros: handled primitives stay symbolic (no warnings) and agree with dense zeros."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import namax.quant as qax
from namax.quant import Zeros

CASES = {
    "add": lambda z, x: z + x,
    "radd": lambda z, x: x + z,
    "sub": lambda z, x: z - x,
    "rsub": lambda z, x: x - z,
    "mul": lambda z, x: x * z,
    "neg": lambda z, x: -z,
    "broadcast": lambda z, x: jnp.broadcast_to(z[None], (2, 3, 4)),
    "reshape": lambda z, x: z.reshape(4, 3),
    "transpose": lambda z, x: z.T,
    "dot": lambda z, x: z @ x.T,
    "rdot": lambda z, x: x.T @ z,
    "convert": lambda z, x: z.astype(jnp.bfloat16),
    "sum": lambda z, x: jnp.sum(z, axis=0),
    "max": lambda z, x: jnp.max(z, axis=1),
    "select": lambda z, x: lax.select(x > 0, z, z),
    "square": lambda z, x: z ** 2,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_handled_without_materializing(name):
    fn = CASES[name]
    z, x = Zeros(shape=(3, 4)), jnp.arange(12.0).reshape(3, 4) - 5
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = qax.use_implicit_args(fn)(z, x)
    assert [str(r.message) for r in rec] == []
    want = fn(jnp.zeros((3, 4)), x)
    got = qax.materialize_value(out)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_zero_results_stay_symbolic_under_jit():
    z = Zeros(shape=(3, 4))
    out = jax.jit(qax.use_implicit_args(lambda z, x: jnp.sum((z * x) @ x.T, axis=0)))(z, jnp.ones((3, 4)))
    assert isinstance(out, Zeros) and out.shape == (3,) and out.dtype == jnp.float32
    assert isinstance(qax.use_implicit_args(lambda a, b: a + b)(z, z), Zeros)


def test_unhandled_op_materializes_with_warning():
    with pytest.warns(UserWarning, match="Primitive exp was not handled by class Zeros"):
        out = qax.use_implicit_args(jnp.exp)(Zeros(shape=(2,), dtype=jnp.float16))
    np.testing.assert_array_equal(out, np.ones(2, np.float16))


def test_repr_and_defaults():
    assert repr(Zeros(shape=(2, 3))) == "Zeros((2, 3), float32)"
    assert Zeros(shape=(1,), dtype=jnp.int8).materialize().dtype == jnp.int8
    with pytest.raises(TypeError, match="shape= must be given"):
        Zeros()
