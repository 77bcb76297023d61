"""An unmodified Flax (linen) model with LoRA and with int4 parameters through use_implicit_args:
no materialization warning, values matching the dense model (within the quantisation error for
int4), and a LoRA fine-tune that lowers the loss while only the factors move. (The equinox
MLP counterparts are in tests/test_quant_lora.py and tests/test_quant_int4.py.)"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import namax.quant as qax

import flax.linen as nn  # noqa: E402  (flax is in the test extra)

IN, HIDDEN, OUT, GROUP = 128, 128, 8, 64


class MLP(nn.Module):
    """A plain Flax MLP, written as any Flax user would: nothing namax-specific."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(HIDDEN)(x))
        x = nn.relu(nn.Dense(HIDDEN)(x))
        return nn.Dense(OUT)(x)


def _is_kernel(path, leaf) -> bool:
    return getattr(path[-1], "key", None) == "kernel"


@pytest.fixture(scope="module")
def setup():
    model = MLP()
    x = jax.random.normal(jax.random.key(0), (16, IN))
    params = jax.jit(model.init)(jax.random.key(1), x)
    return model, params, x


def _strict(fn, *args):
    """``fn(*args)`` with every warning (a materialization included) raised as an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args)


def test_flax_mlp_with_lora_params(setup):
    model, params, x = setup
    lora = qax.lora.wrap(params, rank=4, key=jax.random.key(2), where=_is_kernel)
    assert len(qax.lora.factors(lora)) == 3
    # move b off zero so the low-rank term is actually exercised
    lora = jax.tree_util.tree_map(
        lambda l: qax.LoraWeight(l.w, l.a, jax.random.normal(jax.random.key(3), l.b.shape) / 4, alpha=l.alpha)
        if isinstance(l, qax.LoraWeight) else l, lora, is_leaf=lambda l: isinstance(l, qax.LoraWeight))
    got = _strict(jax.jit(qax.use_implicit_args(model.apply)), lora, x)
    want = jax.jit(model.apply)(qax.lora.merge(lora), x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_flax_mlp_with_int4_params(setup):
    model, params, x = setup
    q = qax.int4.quantize(params, where=_is_kernel, group_size=GROUP, in_axis=0)  # flax kernels are (in, out)
    kernels = [l for l in jax.tree_util.tree_leaves(q, is_leaf=lambda l: isinstance(l, qax.Int4Weight))
               if isinstance(l, qax.Int4Weight)]
    assert len(kernels) == 3 and all(k.order == (0, 1) for k in kernels)
    got = _strict(jax.jit(qax.use_implicit_args(model.apply)), q, x)
    want = jax.jit(model.apply)(qax.int4.dequantize(q), x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    dense = jax.jit(model.apply)(params, x)
    # the quantisation error of three int4 layers at random init compounds
    assert np.linalg.norm(got - dense) / np.linalg.norm(dense) < 0.25


def test_flax_lora_finetune_trains_only_the_factors(setup):
    model, params, x = setup
    y = jnp.sin(x[:, :OUT] * 2)
    lora = qax.lora.wrap(params, rank=4, key=jax.random.key(4), where=_is_kernel, alpha=4.0)
    is_lora = lambda l: isinstance(l, qax.LoraWeight)  # noqa: E731

    def labels(tree):
        return jax.tree_util.tree_map(lambda l: "lora" if is_lora(l) else "frozen", tree, is_leaf=is_lora)

    optimizer = optax.multi_transform(
        {"lora": qax.lora.optimizer(optax.adam(3e-2)), "frozen": optax.set_to_zero()}, labels)
    loss = qax.use_implicit_args(lambda p: jnp.mean((model.apply(p, x) - y) ** 2))

    @jax.jit
    def step(p, state):
        value, grads = jax.value_and_grad(loss)(p)
        updates, state = optimizer.update(grads, state, p)
        return optax.apply_updates(p, updates), state, value

    state = optimizer.init(lora)
    first = None
    trained = lora
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(30):
            trained, state, value = step(trained, state)
            first = float(value) if first is None else first
    assert float(jax.jit(loss)(trained)) < 0.6 * first
    before, after = qax.lora.factors(lora), qax.lora.factors(trained)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a.w, b.w)
        assert float(jnp.max(jnp.abs(a.b))) > 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if getattr(path[-1], "key", None) == "bias":
            got = trained
            for k in path:
                got = got[k.key]
            np.testing.assert_array_equal(got, leaf)
