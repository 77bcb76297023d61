"""Elementwise ops by name against jnp references: unary, binary, where, clip; jit and grads."""

import jax
import jax.test_util
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

import namax as nx
from namax import Axis, NamedArray
from namax.ops import elementwise as ew

B, P, E = Axis("batch", 2), Axis("position", 3), Axis("embed", 4)


def rand(axes, seed=0, low=-2.0, high=2.0):
    shape = tuple(a.size for a in axes)
    return nx.named(np.random.default_rng(seed).uniform(low, high, size=shape).astype(np.float32), axes)


def by_name(x: NamedArray, axes) -> np.ndarray:
    return np.asarray(jnp.transpose(x.array, [x.axis_index(a) for a in axes]))


# name -> input range on which the op is defined
UNARY_SAMPLE = {
    "abs": (-2, 2), "sign": (-2, 2), "floor": (-2, 2), "exp": (-2, 2), "expm1": (-2, 2),
    "log": (0.1, 3), "log1p": (0.1, 3), "sqrt": (0.1, 3), "square": (-2, 2), "reciprocal": (0.5, 3),
    "sin": (-2, 2), "tanh": (-2, 2), "arcsin": (-0.9, 0.9), "arccosh": (1.1, 3), "isnan": (-2, 2),
    "isfinite": (-2, 2), "logical_not": (-2, 2), "signbit": (-2, 2), "sinc": (-2, 2), "nan_to_num": (-2, 2),
}

BINARY_SAMPLE = ["add", "subtract", "multiply", "divide", "power", "maximum", "minimum", "arctan2",
                 "hypot", "logaddexp", "equal", "greater_equal", "logical_and", "copysign", "fmod", "isclose"]


def test_every_listed_op_exists_and_is_exported():
    for name in ew.UNARY_NAMES + ew.BINARY_NAMES + ["where", "clip"]:
        assert callable(getattr(nx, name)), name
        assert getattr(nx, name).__name__ == name


@pytest.mark.parametrize("name", sorted(UNARY_SAMPLE))
def test_unary_ops_match_jnp_eager_and_jit(name):
    lo, hi = UNARY_SAMPLE[name]
    x = rand((B, P), low=lo, high=hi)
    ref = getattr(jnp, name)(x.array)
    fn = getattr(nx, name)
    for out in (fn(x), jax.jit(fn)(x)):
        assert isinstance(out, NamedArray) and out.axes == (B, P)
        np.testing.assert_allclose(out.array, ref, rtol=1e-6)
    # plain arrays pass straight through
    np.testing.assert_allclose(fn(x.array), ref, rtol=1e-6)


def test_unary_ops_forward_extra_arguments():
    x = rand((B, P), low=-3, high=3) * 1.234567
    np.testing.assert_allclose(nx.round(x, 2).array, jnp.round(x.array, 2))
    bad = nx.named(jnp.array([jnp.nan, jnp.inf, 1.0]), (P,))
    np.testing.assert_array_equal(nx.nan_to_num(bad, nan=-1.0, posinf=9.0).array, [-1.0, 9.0, 1.0])


@pytest.mark.parametrize("name", BINARY_SAMPLE)
def test_binary_ops_broadcast_by_name(name):
    a = rand((B, P), low=0.5, high=2.0)
    b = rand((E, P), seed=1, low=0.5, high=2.0)
    if name in ("logical_and",):
        a, b = a > 1.0, b > 1.0
    fn = getattr(nx, name)
    ref = getattr(jnp, name)(a.array[:, :, None], b.array.T[None, :, :])
    for out in (fn(a, b), jax.jit(fn)(a, b)):
        assert out.axes == (B, P, E)
        np.testing.assert_allclose(out.array, ref, rtol=1e-6)
    np.testing.assert_allclose(by_name(fn(b, a), (B, P, E)), getattr(jnp, name)(
        b.array.T[None, :, :], a.array[:, :, None]), rtol=1e-6)


def test_binary_ops_with_scalars_and_keyword_arguments():
    a = rand((B, P))
    np.testing.assert_allclose(nx.maximum(a, 0.0).array, jnp.maximum(a.array, 0.0))
    np.testing.assert_allclose(nx.power(2.0, a).array, jnp.power(2.0, a.array), rtol=1e-6)
    b = a + 1e-3
    np.testing.assert_array_equal(nx.isclose(a, b, atol=1e-2).array, jnp.isclose(a.array, b.array, atol=1e-2))
    np.testing.assert_array_equal(nx.isclose(a, b, atol=0.0, rtol=0.0).array, np.zeros((2, 3), bool))
    i = nx.named(np.array([12, 18, 5], np.int32), (P,))
    np.testing.assert_array_equal(nx.gcd(i, 6).array, np.gcd([12, 18, 5], 6))
    np.testing.assert_array_equal(nx.left_shift(i, 1).array, [24, 36, 10])


def test_binary_op_errors():
    a = rand((B, P))
    with pytest.raises(TypeError, match=r"unnamed array of shape \(3,\)"):
        nx.add(a, jnp.ones(3))
    with pytest.raises(ValueError, match=r"Axis 'position' has size 3 .* size 4"):
        nx.multiply(a, rand((P.resize(4),)))


@given(st.permutations([B, P, E]), st.permutations([P, E]), st.permutations([E, B]))
def test_where_broadcasts_three_operands_by_name(oc, ox, oy):
    base_c = rand((B, P, E), seed=2) > 0.0
    base_x, base_y = rand((P, E), seed=3), rand((B, E), seed=4)
    c, x, y = base_c.rearrange(oc), base_x.rearrange(ox), base_y.rearrange(oy)
    out = nx.where(c, x, y)
    expected = list(ox) + [a for a in oy if a not in ox]
    expected += [a for a in oc if a not in expected]
    assert out.axes == tuple(expected)  # the values' layout first, then the condition's
    ref = jnp.where(base_c.array, base_x.array[None], base_y.array[:, None, :])
    np.testing.assert_allclose(by_name(out, (B, P, E)), ref)
    np.testing.assert_allclose(by_name(jax.jit(nx.where)(c, x, y), (B, P, E)), ref)


def test_where_with_scalars_and_unnamed_fallback():
    x = rand((B, P))
    out = nx.where(x > 0, x, 0.0)
    assert out.axes == (B, P)
    np.testing.assert_allclose(out.array, jnp.where(x.array > 0, x.array, 0.0))
    np.testing.assert_allclose(nx.where(jnp.array([True, False]), 1.0, 2.0), [1.0, 2.0])
    with pytest.raises(TypeError, match="unnamed array"):
        nx.where(x > 0, jnp.ones((2, 3)), 0.0)


def test_clip_with_named_and_missing_bounds():
    x = rand((B, P))
    hi = rand((P,), seed=5, low=0.0, high=1.0)
    out = nx.clip(x, -0.5, hi)
    assert out.axes == (B, P)
    np.testing.assert_allclose(out.array, np.clip(np.asarray(x.array), -0.5, np.asarray(hi.array)[None]))
    np.testing.assert_allclose(nx.clip(x, None, 0.5).array, np.minimum(x.array, 0.5))
    np.testing.assert_allclose(nx.clip(x, a_min=0.0).array, np.maximum(x.array, 0.0))
    np.testing.assert_allclose(jax.jit(nx.clip)(x, -0.5, hi).array, out.array)


def test_gradients_of_elementwise_ops_match_jnp():
    x = rand((B, P), seed=6, low=0.2, high=2.0)
    y = rand((P,), seed=7, low=0.2, high=2.0)

    def named_loss(x, y):
        z = nx.tanh(x) * nx.exp(y) + nx.log(x) / y + nx.where(x > 1.0, nx.sqrt(x), nx.square(y))
        return nx.sum(nx.clip(z, -3.0, 3.0) + nx.maximum(x, y) ** 2).array

    def plain_loss(x, y):
        z = jnp.tanh(x) * jnp.exp(y) + jnp.log(x) / y + jnp.where(x > 1.0, jnp.sqrt(x), jnp.square(y))
        return jnp.sum(jnp.clip(z, -3.0, 3.0) + jnp.maximum(x, y) ** 2)

    gx, gy = jax.jit(jax.grad(named_loss, argnums=(0, 1)))(x, y)
    rx, ry = jax.grad(plain_loss, argnums=(0, 1))(x.array, y.array)
    assert gx.axes == (B, P) and gy.axes == (P,)
    np.testing.assert_allclose(gx.array, rx, rtol=1e-5)
    np.testing.assert_allclose(gy.array, ry, rtol=1e-5)
    jax.test_util.check_grads(lambda a: named_loss(nx.named(a, (B, P)), y), (x.array,), order=1,
                              modes=("rev",), atol=1e-2, rtol=1e-2)


def test_where_keeps_the_value_layout():
    A, B = nx.Axis("a", 2), nx.Axis("b", 3)
    x = nx.named(np.arange(6.0).reshape(2, 3), (A, B))
    mask = nx.named(np.array([[True, False], [False, True], [True, True]]), (B, A))
    out = nx.where(mask, x, 0.0)
    assert out.axes == (A, B)
    np.testing.assert_allclose(out.array, np.where(np.asarray(mask.array).T, np.asarray(x.array), 0.0))
