"""namax.nn functions (normalisation, activations) against jax.nn / plain jnp: values, axes,
gradients, several axes at once, and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import namax as nx
import namax.nn as hnn
from namax import Axis
from named_cases import rand, close

B, P, K, E = Axis("batch", 2), Axis("position", 3), Axis("key_position", 5), Axis("embed", 4)


# --- normalisation -------------------------------------------------------------------------


@pytest.mark.parametrize("fn, ref", [(hnn.softmax, jax.nn.softmax), (hnn.log_softmax, jax.nn.log_softmax)])
def test_softmax_family_one_axis(fn, ref):
    x = rand((B, K, P), scale=3.0)
    y = fn(x, K)
    assert y.axes == x.axes
    close(y.array, ref(x.array, axis=1))
    # under jit, and by name
    close(jax.jit(lambda v: fn(v, "key_position"))(x).array, ref(x.array, axis=1))


@pytest.mark.parametrize("fn, ref", [(hnn.softmax, jax.nn.softmax), (hnn.log_softmax, jax.nn.log_softmax)])
def test_softmax_family_several_axes(fn, ref):
    x = rand((B, K, P), seed=1)
    y = fn(x, (P, B))
    close(y.array, ref(x.array, axis=(0, 2)))
    if fn is hnn.softmax:
        close(nx.sum(y, (B, P)).array, np.ones(K.size))


@pytest.mark.parametrize("fn, ref", [(hnn.softmax, jax.nn.softmax), (hnn.log_softmax, jax.nn.log_softmax)])
def test_softmax_family_gradients(fn, ref):
    x = rand((B, K), seed=2)
    cot = np.random.default_rng(3).normal(size=(2, 5)).astype(np.float32)
    g = jax.grad(lambda a: jnp.sum(fn(nx.named(a, (B, K)), K).array * cot))(x.array)
    g_ref = jax.grad(lambda a: jnp.sum(ref(a, axis=1) * cot))(x.array)
    close(g, g_ref)


def test_softmax_is_stable_and_handles_minus_inf():
    x = nx.named(jnp.array([[1000.0, 1000.0, -jnp.inf], [-jnp.inf, 0.0, 1.0]]), (B, Axis("k", 3)))
    y = hnn.softmax(x, "k")
    close(y.array, jax.nn.softmax(x.array, axis=1))
    assert np.all(np.isfinite(y.array))


def test_logsumexp_drops_the_axis():
    x = rand((B, K, P), seed=4)
    y = hnn.logsumexp(x, K)
    assert y.axes == (B, P)
    close(y.array, jax.nn.logsumexp(x.array, axis=1))
    close(hnn.logsumexp(x, (B, K)).array, jax.nn.logsumexp(x.array, axis=(0, 1)))


def test_standardize_matches_jnp():
    x = rand((B, E), seed=5, scale=2.0)
    y = hnn.standardize(x, E, eps=1e-5)
    a = x.array
    ref = (a - a.mean(1, keepdims=True)) / jnp.sqrt(a.var(1, keepdims=True) + 1e-5)
    close(y.array, ref)
    mean = nx.mean(x, E)
    y2 = hnn.standardize(x, E, mean=mean, variance=nx.var(x, E))
    close(y2.array, ref)
    g = jax.grad(lambda v: jnp.sum(hnn.standardize(nx.named(v, (B, E)), E).array ** 3))(a)
    g_ref = jax.grad(lambda v: jnp.sum(((v - v.mean(1, keepdims=True)) / jnp.sqrt(v.var(1, keepdims=True) + 1e-5)) ** 3))(a)
    close(g, g_ref, 1e-4)


def test_normalization_errors_name_the_axis():
    x = rand((B, E))
    with pytest.raises(ValueError, match="'key_position' not found"):
        hnn.softmax(x, K)
    with pytest.raises(TypeError, match="expected a NamedArray"):
        hnn.softmax(x.array, E)
    with pytest.raises(ValueError, match="size 4 in the array but 7"):
        hnn.log_softmax(x, Axis("embed", 7))


def test_seed_module_paths_exist():
    import namax as haliax
    import namax.nn.activations
    import namax.nn.normalization

    assert haliax.nn.softmax is haliax.nn.normalization.softmax
    assert namax.nn.activations.relu is hnn.relu


def test_softmax_leaves_names_in_the_jaxpr():
    x = rand((B, K))
    jaxpr = jax.make_jaxpr(lambda v: hnn.softmax(v, K))(x)
    tags = [e.params["axes"] for e in jaxpr.jaxpr.eqns if e.primitive.name == "named_axes"]
    assert ("batch",) in tags  # the max / sum over key_position
    assert tags[-1] == ("batch", "key_position")


# --- activations ---------------------------------------------------------------------------

ELEMENTWISE = [
    ("relu", jax.nn.relu), ("relu6", jax.nn.relu6), ("sigmoid", jax.nn.sigmoid),
    ("log_sigmoid", jax.nn.log_sigmoid), ("softplus", jax.nn.softplus), ("soft_sign", jax.nn.soft_sign),
    ("silu", jax.nn.silu), ("swish", jax.nn.silu), ("elu", jax.nn.elu), ("celu", jax.nn.celu),
    ("selu", jax.nn.selu), ("leaky_relu", jax.nn.leaky_relu), ("hard_tanh", jax.nn.hard_tanh),
    ("hard_sigmoid", jax.nn.hard_sigmoid), ("hard_silu", jax.nn.hard_silu), ("tanh", jnp.tanh),
    ("gelu", lambda a: jax.nn.gelu(a, approximate=True)),
    ("quick_gelu", lambda a: a * jax.nn.sigmoid(1.702 * a)),
]


@pytest.mark.parametrize("name, ref", ELEMENTWISE, ids=[n for n, _ in ELEMENTWISE])
def test_elementwise_activation(name, ref):
    fn = getattr(hnn, name)
    x = rand((B, E), seed=6, scale=4.0)
    y = fn(x)
    assert y.axes == x.axes
    close(y.array, ref(x.array))
    g = jax.grad(lambda a: jnp.sum(fn(nx.named(a, (B, E))).array))(x.array)
    close(g, jax.grad(lambda a: jnp.sum(ref(a)))(x.array), 1e-4)
    close(fn(x.array), ref(x.array))  # plain arrays pass through


def test_gelu_exact_and_leaky_slope():
    x = rand((E,), seed=7, scale=3.0)
    close(hnn.gelu(x, approximate=False).array, jax.nn.gelu(x.array, approximate=False))
    close(hnn.leaky_relu(x, negative_slope=0.2).array, jax.nn.leaky_relu(x.array, negative_slope=0.2))


@pytest.mark.parametrize("name, act", [("glu", jax.nn.sigmoid), ("swiglu", jax.nn.silu),
                                       ("geglu", lambda a: jax.nn.gelu(a, approximate=True))])
def test_gated_activations(name, act):
    Mlp = Axis("mlp", 6)
    x = rand((B, Mlp, P), seed=8)
    y = getattr(hnn, name)(x, Mlp)
    assert y.axes == (B, Axis("mlp", 3), P)
    a = x.array
    close(y.array, a[:, :3] * act(a[:, 3:]))
    g = jax.grad(lambda v: jnp.sum(getattr(hnn, name)(nx.named(v, x.axes), "mlp").array))(a)
    close(g, jax.grad(lambda v: jnp.sum(v[:, :3] * act(v[:, 3:])))(a), 1e-4)


def test_gated_needs_an_even_axis():
    with pytest.raises(ValueError, match="axis 'mlp'.*odd size 5"):
        hnn.glu(rand((Axis("mlp", 5),)), "mlp")
