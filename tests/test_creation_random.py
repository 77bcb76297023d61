"""Creation functions and namax.random against jnp / jax.random references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import namax as nx
from namax import Axis

B, E, V = Axis("batch", 3), Axis("embed", 4), Axis("vocab", 5)
KEY = jax.random.key(42)


def tagged_names(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args)
    return [e.params["axes"] for e in jaxpr.jaxpr.eqns if e.primitive.name == "named_axes"]


# --- creation -----------------------------------------------------------------------------


def test_existing_creation_functions():
    np.testing.assert_array_equal(nx.arange(E, start=2, step=3).array, np.arange(2, 14, 3))
    z = nx.zeros((B, E))
    assert z.axes == (B, E) and z.dtype == jnp.float32
    np.testing.assert_array_equal(nx.full((B,), 7, jnp.int32).array, np.full(3, 7))
    np.testing.assert_array_equal(nx.ones_like(z).array, np.ones((3, 4)))


@pytest.mark.parametrize("endpoint", [True, False])
def test_linspace_and_logspace_match_jnp(endpoint):
    x = nx.linspace(E, start=-1.0, stop=2.0, endpoint=endpoint)
    assert x.axes == (E,)
    np.testing.assert_array_equal(x.array, jnp.linspace(-1.0, 2.0, 4, endpoint=endpoint))
    y = nx.logspace(E, start=0.0, stop=2.0, endpoint=endpoint, base=2.0)
    np.testing.assert_array_equal(y.array, jnp.logspace(0.0, 2.0, 4, endpoint=endpoint, base=2.0))
    y = jax.jit(lambda s: nx.linspace(E, start=s, stop=1.0))(jnp.float32(0.5))
    np.testing.assert_array_equal(y.array, jnp.linspace(0.5, 1.0, 4))


def test_empty_like_has_axes_and_dtype():
    x = nx.empty((B, E), jnp.int8)
    assert x.axes == (B, E) and x.dtype == jnp.int8
    y = nx.empty_like(nx.ones((B,), jnp.bfloat16))
    assert y.axes == (B,) and y.dtype == jnp.bfloat16


def test_creation_errors():
    with pytest.raises(TypeError, match="linspace needs an Axis"):
        nx.linspace("x", start=0.0, stop=1.0)
    with pytest.raises(TypeError, match="need Axis objects"):
        nx.empty(("x",))


# --- random: same draws as jax.random on the positional shape --------------------------------


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_normal_and_uniform_match_jax_random(dtype):
    for f in (lambda: nx.random.normal(KEY, (B, E), dtype), jax.jit(lambda: nx.random.normal(KEY, (B, E), dtype))):
        x = f()
        assert x.axes == (B, E) and x.dtype == dtype
        np.testing.assert_array_equal(x.array, jax.random.normal(KEY, (3, 4), dtype))
    x = nx.random.uniform(KEY, (E, B), dtype, minval=-2.0, maxval=3.0)
    assert x.axes == (E, B)
    np.testing.assert_array_equal(x.array, jax.random.uniform(KEY, (4, 3), dtype, -2.0, 3.0))
    # a raw (uint32) key works too
    raw = jax.random.PRNGKey(0)
    np.testing.assert_array_equal(nx.random.normal(raw, E).array, jax.random.normal(raw, (4,)))


def test_uniform_named_bounds_broadcast_by_name():
    lo = nx.named(jnp.arange(4.0), E)
    x = nx.random.uniform(KEY, (B, E), minval=lo, maxval=lo + 1.0)
    np.testing.assert_array_equal(
        x.array, jax.random.uniform(KEY, (3, 4), jnp.float32, jnp.arange(4.0)[None], jnp.arange(4.0)[None] + 1)
    )
    assert bool(((x.array >= lo.array) & (x.array < lo.array + 1)).all())


def test_bernoulli_randint_truncated_gumbel_match_jax_random():
    np.testing.assert_array_equal(nx.random.bernoulli(KEY, (B, E), 0.3).array, jax.random.bernoulli(KEY, 0.3, (3, 4)))
    p = nx.named(jnp.array([0.0, 1.0, 0.5]), B)
    y = nx.random.bernoulli(KEY, (E, B), p)
    assert y.axes == (E, B)
    np.testing.assert_array_equal(y.array, jax.random.bernoulli(KEY, jnp.array([0.0, 1.0, 0.5])[None], (4, 3)))
    assert not y.array[:, 0].any() and y.array[:, 1].all()
    r = nx.random.randint(KEY, (B, E), 2, 9, jnp.int16)
    assert r.dtype == jnp.int16
    np.testing.assert_array_equal(r.array, jax.random.randint(KEY, (3, 4), 2, 9, jnp.int16))
    t = nx.random.truncated_normal(KEY, (B, E), -0.5, 1.5)
    np.testing.assert_array_equal(t.array, jax.random.truncated_normal(KEY, -0.5, 1.5, (3, 4)))
    np.testing.assert_array_equal(nx.random.gumbel(KEY, (E,)).array, jax.random.gumbel(KEY, (4,)))


def test_categorical_matches_jax_random():
    logits = nx.named(jax.random.normal(jax.random.key(1), (5, 3)), (V, B))
    s = nx.random.categorical(KEY, logits, "vocab")
    assert s.axes == (B,)
    np.testing.assert_array_equal(s.array, jax.random.categorical(KEY, logits.array.T, axis=-1))
    S = Axis("sample", 2)
    s = jax.jit(lambda l: nx.random.categorical(KEY, l, V, shape=(S, B)))(logits)
    assert s.axes == (S, B)
    np.testing.assert_array_equal(s.array, jax.random.categorical(KEY, logits.array.T[None], axis=-1, shape=(2, 3)))
    # a near-one-hot distribution is sampled where its mass is
    peaked = nx.named(jnp.where(jnp.arange(5)[:, None] == jnp.array([4, 0, 2]), 0.0, -1e9), (V, B))
    np.testing.assert_array_equal(nx.random.categorical(KEY, peaked, "vocab").array, [4, 0, 2])


def test_permutation():
    p = nx.random.permutation(KEY, V)
    assert p.axes == (V,)
    np.testing.assert_array_equal(p.array, jax.random.permutation(KEY, 5))
    x = nx.named(jnp.arange(15).reshape(3, 5), (B, V))
    y = nx.random.permutation(KEY, x, "vocab")
    np.testing.assert_array_equal(y.array, jax.random.permutation(KEY, x.array, axis=1))


def test_random_errors():
    with pytest.raises(TypeError, match="shape must be an Axis or a tuple of Axes"):
        nx.random.normal(KEY, ("batch",))
    with pytest.raises(TypeError, match="shape must be an Axis or a tuple of Axes"):
        nx.random.normal(KEY, (3, 4))
    with pytest.raises(ValueError, match="duplicate axis names"):
        nx.random.normal(KEY, (B, B))
    with pytest.raises(ValueError, match="p has axes \\['vocab'\\] that are not in shape"):
        nx.random.bernoulli(KEY, (B,), nx.ones((V,)) * 0.5)
    with pytest.raises(ValueError, match="Axis 'batch' has size 2"):
        nx.random.uniform(KEY, (B,), minval=nx.zeros((Axis("batch", 2),)))
    with pytest.raises(TypeError, match="minval is an unnamed array of shape \\(3,\\)"):
        nx.random.uniform(KEY, (B,), minval=jnp.zeros(3))
    logits = nx.zeros((B, V))
    with pytest.raises(ValueError, match="Axis 'embed' not found"):
        nx.random.categorical(KEY, logits, "embed")
    with pytest.raises(ValueError, match="lacks the logits' axes \\['batch'\\]"):
        nx.random.categorical(KEY, logits, "vocab", shape=(E,))
    with pytest.raises(ValueError, match="contains the sampled axis 'vocab'"):
        nx.random.categorical(KEY, logits, "vocab", shape=(B, V))
    with pytest.raises(TypeError, match="name the axis to permute"):
        nx.random.permutation(KEY, logits)


def test_random_results_are_tagged():
    assert tagged_names(lambda k: nx.random.normal(k, (B, E)), KEY)[-1] == ("batch", "embed")
    assert tagged_names(lambda k: nx.random.uniform(k, (E,)), KEY)[-1] == ("embed",)


def test_choice_matches_jax_random():
    S = Axis("sample", 2)
    a = nx.named(jnp.arange(15.0).reshape(3, 5), (B, V))
    y = nx.random.choice(KEY, S, a, "vocab")
    assert y.axes == (B, S)
    np.testing.assert_array_equal(y.array, jax.random.choice(KEY, a.array, (2,), axis=1))
    p = nx.named(jnp.array([0.0, 0.0, 1.0, 0.0, 0.0]), V)
    y = nx.random.choice(KEY, (S, E), a, V, p=p)
    assert y.axes == (B, S, E)
    np.testing.assert_array_equal(y.array, jnp.broadcast_to(a.array[:, 2, None, None], (3, 2, 4)))
    y = nx.random.choice(KEY, Axis("pick", 3), a, "batch", replace=False)
    np.testing.assert_array_equal(y.array, jax.random.choice(KEY, a.array, (3,), replace=False, axis=0))
    with pytest.raises(ValueError, match="p must be a NamedArray with the single axis 'vocab'"):
        nx.random.choice(KEY, S, a, "vocab", p=nx.ones((B,)))
    with pytest.raises(ValueError, match="reuses an axis name"):
        nx.random.choice(KEY, B, a, "vocab")
