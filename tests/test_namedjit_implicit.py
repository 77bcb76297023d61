"""Implicit arrays (LoRA, Zeros) as namedjit arguments: handlers fire, names and shardings stay."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

import namax as nx
from namax.quant import LoraWeight, Zeros, lora, use_implicit_args

B, E, M = nx.make_axes(batch=8, embed=16, mlp=32)


def layer(p, x):
    return nx.tanh(nx.dot(x, p["w"], axis=E) + p["b"])


@pytest.fixture
def data():
    x = nx.named(jax.random.normal(jax.random.PRNGKey(0), (8, 16)), (B, E))
    w = nx.named(jax.random.normal(jax.random.PRNGKey(1), (16, 32)) * 0.3, (E, M))
    b = nx.named(jax.random.normal(jax.random.PRNGKey(2), (32,)), (M,))
    return x, {"w": w, "b": b}


def lora_params(params, seed=3):
    p = lora.wrap({"w": params["w"]}, rank=4, key=jax.random.PRNGKey(seed))
    w = p["w"]
    # give b non-zero values so the low-rank term matters
    lw = w.array
    b = jax.random.normal(jax.random.PRNGKey(seed + 1), lw.b.shape) * 0.1
    return {"w": nx.NamedArray(LoraWeight(lw.w, lw.a, b, alpha=lw.alpha), w.axes), "b": params["b"]}


def dense_of(p):
    return {k: nx.NamedArray(v.array.materialize(), v.axes) if isinstance(v.array, LoraWeight) else v
            for k, v in p.items()}


def test_lora_params_in_named_model_match_dense_without_warnings(data):
    x, params = data
    lp = lora_params(params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = nx.namedjit(layer)(lp, x)
    ref = layer(dense_of(lp), x)
    assert out.axes == (B, M)
    np.testing.assert_allclose(out.array, ref.array, rtol=1e-5, atol=1e-5)


def test_lora_is_never_merged_in_the_program(data):
    x, params = data
    lp = lora_params(params)
    jaxpr = nx.namedjit(layer).trace(lp, x).jaxpr
    text = str(jaxpr)
    # three dots (x w, x a, (x a) b^T), no [16, 32]-sized a @ b^T product
    assert text.count("dot_general") == 3
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            lhs, rhs = (v.aval.shape for v in eqn.invars)
            assert not (lhs == (16, 4) and rhs == (32, 4)), "a b^T was formed"


def test_lora_gradients_for_a_and_b(data):
    x, params = data
    lp = lora_params(params)

    def loss(p, x):
        return nx.mean(layer(p, x) ** 2).array

    # as in Qax: make the loss implicit-aware first, then differentiate (w.r.t. a and b);
    # implicit="pytree" hands the LoRA weights to such code as they are
    grads = nx.namedjit(jax.grad(use_implicit_args(loss)), implicit="pytree")(lp, x)
    assert isinstance(grads["w"].array, LoraWeight)
    lw = lp["w"].array

    def dense_loss(a, b):
        w = lw.w + (lw.alpha / a.shape[1]) * a @ b.T
        return jnp.mean(jnp.tanh(x.array @ w + params["b"].array) ** 2)

    ga, gb = jax.grad(dense_loss, (0, 1))(lw.a, lw.b)
    np.testing.assert_allclose(grads["w"].array.a, ga, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads["w"].array.b, gb, rtol=1e-4, atol=1e-6)


def test_sharded_lora_keeps_names_and_shardings(data):
    x, params = data
    lp = lora_params(params)
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    f = nx.namedjit(layer, axis_resources={"batch": "data", "mlp": "model"}, mesh=mesh)
    out = f(lp, x)
    np.testing.assert_allclose(out.array, layer(dense_of(lp), x).array, rtol=1e-5, atol=1e-5)
    assert out.array.sharding.spec == P("data", "model")


def test_symbolic_zero_bias(data):
    x, params = data
    p = {"w": params["w"], "b": nx.NamedArray(Zeros(shape=(32,), dtype=jnp.float32), (M,))}
    out = nx.namedjit(layer)(p, x)
    np.testing.assert_allclose(out.array, np.tanh(np.asarray(x.array) @ np.asarray(params["w"].array)),
                               rtol=1e-5, atol=1e-6)


def test_grad_inside_a_model_call_is_with_respect_to_the_dense_weight(data):
    # a plain jax.grad of a model that multiplies by the weight sees the weight's dense value
    x, params = data
    lp = lora_params(params)
    g = nx.namedjit(jax.grad(lambda x, p: nx.sum(layer(p, x)).array))(x, lp)
    ref = jax.grad(lambda x: nx.sum(layer(dense_of(lp), x)).array)(x)
    np.testing.assert_allclose(g.array, ref.array, rtol=1e-5, atol=1e-6)


def test_plain_code_with_lora_named_by_in_axes():
    x = jnp.ones((8, 16))
    w = jax.random.normal(jax.random.PRNGKey(0), (16, 32))
    p = lora.wrap({"w": w}, rank=4, key=jax.random.PRNGKey(1))
    f = nx.namedjit(lambda x, p: jnp.tanh(x @ p["w"]), in_axes=(("batch", "embed"), {"w": ("embed", "mlp")}),
                    out_axes="infer")
    out = f(x, p)
    assert out.axis_names == ("batch", "mlp")
    np.testing.assert_allclose(out.array, jnp.tanh(x @ w), rtol=1e-5, atol=1e-6)
    _, report = f.lower_with_report(x, p)
    assert report.arguments_named == 4  # x, the LoRA base weight w, and a, b (their rank dim unnamed)


def test_infer_names_through_a_lora_weight():
    x = jnp.ones((8, 16))
    p = lora.wrap({"w": jax.random.normal(jax.random.PRNGKey(0), (16, 32))}, rank=4, key=jax.random.PRNGKey(1))
    r = nx.infer_names(lambda p, x: jnp.tanh(x @ p["w"]), p, x, in_axes=({"w": ("embed", "mlp")}, ("batch", "embed")))
    # w, a, b (rank unnamed), x
    assert r.in_names == [("embed", "mlp"), ("embed", None), ("mlp", None), ("batch", "embed")]
    assert r.out_names == [("batch", "mlp")]
