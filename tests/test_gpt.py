"""The named GPT (examples/gpt.py) against a plain-jnp GPT with the same weights."""

import pathlib
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))

import namax as nx  # noqa: E402
from gpt import GPT, GPTConfig, KVCache, loss_fn  # noqa: E402
from gpt_reference import plain_decode_step, plain_forward, plain_loss, plain_params  # noqa: E402
from lm_data import batch_at, decode, encode, eval_batches, load_corpus  # noqa: E402

CONFIG = GPTConfig(seq_len=16, embed=32, heads=4, layers=2, vocab=256)
Batch = nx.Axis("batch", 3)


def _ids(seed: int, config: GPTConfig = CONFIG) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, config.vocab, size=(Batch.size, config.seq_len), dtype=np.int32)


def _named(ids: np.ndarray, config: GPTConfig = CONFIG) -> nx.NamedArray:
    return nx.named(jnp.asarray(ids), (Batch, config.Pos))


@pytest.fixture(scope="module")
def model() -> GPT:
    @eqx.filter_jit
    def build():
        model = GPT.init(CONFIG, key=jax.random.key(0))
        # non-trivial norms and biases, so the comparison covers them too
        leaves, treedef = jax.tree_util.tree_flatten(model)
        keys = jax.random.split(jax.random.key(1), len(leaves))
        leaves = [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
        return jax.tree_util.tree_unflatten(treedef, leaves)

    return build()


def test_forward_matches_plain_jnp(model):
    ids = _ids(0)
    logits = jax.jit(lambda m, x: m(x))(model, _named(ids))
    assert [a.name for a in logits.axes] == ["batch", "position", "vocab"]
    expected = jax.jit(plain_forward, static_argnums=2)(plain_params(model), jnp.asarray(ids), CONFIG)
    np.testing.assert_allclose(np.asarray(logits.array), np.asarray(expected), rtol=2e-5, atol=2e-5)


def test_loss_and_gradients_match_plain_jnp(model):
    inputs, targets = _ids(1), _ids(2)
    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(model, _named(inputs), _named(targets))
    ref_loss, ref_grads = jax.jit(jax.value_and_grad(plain_loss), static_argnums=3)(
        plain_params(model), jnp.asarray(inputs), jnp.asarray(targets), CONFIG)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
    named_grads = plain_params(grads)
    for name in ("wte", "wpe", "w_qkv", "w_out", "w_up", "b_down", "ln1_g", "lnf_b"):
        np.testing.assert_allclose(np.asarray(named_grads[name]), np.asarray(ref_grads[name]),
                                   rtol=2e-4, atol=2e-6, err_msg=name)


def test_kv_cache_decoding_matches_full_forward(model):
    ids = _ids(3)
    full = jax.jit(lambda m, x: m(x))(model, _named(ids)).rearrange(("batch", "position", "vocab")).array

    @jax.jit
    def decode_all(m, ids):
        def step(cache, pos):
            logits, cache = m.decode_step(nx.named(ids[:, pos], Batch), cache, pos)
            return cache, logits.rearrange(("batch", "vocab")).array
        _, out = jax.lax.scan(step, KVCache.init(CONFIG, Batch), jnp.arange(CONFIG.seq_len))
        return out.transpose(1, 0, 2)

    np.testing.assert_allclose(np.asarray(decode_all(model, jnp.asarray(ids))), np.asarray(full), rtol=2e-5, atol=2e-5)


def test_plain_decode_step_matches_full_forward(model):
    """The plain-jnp decoder (the baseline of benchmarks/decode.py) is the same model."""
    ids = _ids(4)
    params = plain_params(model)
    full = jax.jit(plain_forward, static_argnums=2)(params, jnp.asarray(ids), CONFIG)
    shape = (CONFIG.layers, Batch.size, CONFIG.seq_len, CONFIG.heads, CONFIG.embed // CONFIG.heads)

    @jax.jit
    def decode_all(params, ids):
        def step(cache, pos):
            logits, cache = plain_decode_step(params, ids[:, pos], cache, pos, CONFIG)
            return cache, logits
        _, out = jax.lax.scan(step, (jnp.zeros(shape), jnp.zeros(shape)), jnp.arange(CONFIG.seq_len))
        return out.transpose(1, 0, 2)

    np.testing.assert_allclose(np.asarray(decode_all(params, jnp.asarray(ids))), np.asarray(full), rtol=2e-5,
                               atol=2e-5)


def test_parameters_carry_layers_axis(model):
    w = model.blocks.stacked.attn.qkv.weight
    assert set(w.axis_names) == {"layers", "qkv", "heads", "head_size", "embed"}
    assert w.axis_size("layers") == CONFIG.layers


def test_bad_inputs_raise_clear_errors(model):
    with pytest.raises(ValueError, match="embed=30 is not divisible by heads=4"):
        GPTConfig(embed=30, heads=4)
    short = nx.named(jnp.zeros((3, 5), jnp.int32), (Batch, nx.Axis("position", 5)))
    with pytest.raises(ValueError, match="position axis of size 5, the model expects 16"):
        model(short)


def test_tokenizer_and_batches():
    assert decode(encode("Wherefore art thou?")) == "Wherefore art thou?"
    train, held_out = load_corpus()
    assert len(held_out) == pytest.approx(0.1 * (len(train) + len(held_out)), abs=1)
    a = batch_at(train, 7, 4, 32, seed=3)
    b = batch_at(train, 7, 4, 32, seed=3)
    c = batch_at(train, 8, 4, 32, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    np.testing.assert_array_equal(a[0][:, 1:], a[1][:, :-1])
    (x, y), = eval_batches(held_out, 2, 32, 1)
    assert decode(x[1]) == decode(held_out[32:64])
