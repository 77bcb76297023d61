"""The GPT of ``examples/gpt.py`` written in plain ``jax.numpy`` (positional axes).

Used by the tests (same weights -> same logits) and by ``benchmarks/train.py`` (named
code under ``namedjit`` against this under ``jax.jit``). :func:`plain_params` reads the
named model's weights into a dict of raw arrays in one fixed layout.

>>> import jax, jax.numpy as jnp
>>> from gpt import GPT, GPTConfig
>>> config = GPTConfig(seq_len=8, embed=16, heads=2, layers=2)
>>> params = plain_params(GPT.init(config, key=jax.random.key(0)))
>>> plain_forward(params, jnp.zeros((2, 8), jnp.int32), config).shape
(2, 8, 256)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from gpt import GPT, GPTConfig


def _raw(x, *names: str) -> jax.Array:
    """A NamedArray's array with its axes in the order ``names``."""
    return x.rearrange(names).array


def plain_params(model: GPT) -> dict[str, jax.Array]:
    """The model's weights as raw arrays; every block weight has a leading layers dim."""
    blocks = model.blocks.stacked
    attn, mlp = blocks.attn, blocks.mlp
    up, down = mlp.layers
    return {
        "wte": _raw(model.token_embed.weight, "vocab", "embed"),
        "wpe": _raw(model.pos_embed.weight, "position", "embed"),
        "ln1_g": _raw(blocks.ln1.weight, "layers", "embed"), "ln1_b": _raw(blocks.ln1.bias, "layers", "embed"),
        "ln2_g": _raw(blocks.ln2.weight, "layers", "embed"), "ln2_b": _raw(blocks.ln2.bias, "layers", "embed"),
        "w_qkv": _raw(attn.qkv.weight, "layers", "embed", "qkv", "heads", "head_size"),
        "b_qkv": _raw(attn.qkv.bias, "layers", "qkv", "heads", "head_size"),
        "w_out": _raw(attn.out.weight, "layers", "heads", "head_size", "embed"),
        "b_out": _raw(attn.out.bias, "layers", "embed"),
        "w_up": _raw(up.weight, "layers", "embed", "mlp"), "b_up": _raw(up.bias, "layers", "mlp"),
        "w_down": _raw(down.weight, "layers", "mlp", "embed"), "b_down": _raw(down.bias, "layers", "embed"),
        "lnf_g": _raw(model.ln_f.weight, "embed"), "lnf_b": _raw(model.ln_f.bias, "embed"),
    }


def _layer_norm(x: jax.Array, g: jax.Array, b: jax.Array, eps: float = 1e-5) -> jax.Array:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * g + b


def _block(x: jax.Array, p: dict[str, jax.Array]) -> jax.Array:
    seq = x.shape[-2]
    h = _layer_norm(x, p["ln1_g"], p["ln1_b"])
    qkv = jnp.einsum("bse,ezhk->zbshk", h, p["w_qkv"]) + p["b_qkv"][:, None, None]
    q, k, v = qkv[0], qkv[1], qkv[2]
    scores = jnp.einsum("bshk,bthk->bhst", q, k) / jnp.sqrt(q.shape[-1])
    causal = jnp.tril(jnp.ones((seq, seq), bool))
    scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
    answers = jnp.einsum("bhst,bthk->bshk", jax.nn.softmax(scores, axis=-1), v)
    x = x + jnp.einsum("bshk,hke->bse", answers, p["w_out"]) + p["b_out"]
    h = _layer_norm(x, p["ln2_g"], p["ln2_b"])
    h = jax.nn.gelu(h @ p["w_up"] + p["b_up"], approximate=True)
    return x + h @ p["w_down"] + p["b_down"]


_GLOBAL = ("wte", "wpe", "lnf_g", "lnf_b")


def plain_forward(params: dict[str, jax.Array], ids: jax.Array, config: GPTConfig) -> jax.Array:
    """Logits ``[batch, seq, vocab]`` for int ids ``[batch, seq]``."""
    x = params["wte"][ids] + params["wpe"]
    stacked = {k: v for k, v in params.items() if k not in _GLOBAL}
    x, _ = jax.lax.scan(lambda h, p: (_block(h, p), None), x, stacked)
    x = _layer_norm(x, params["lnf_g"], params["lnf_b"])
    return x @ params["wte"].T


def plain_decode_step(params: dict[str, jax.Array], ids: jax.Array, cache: tuple[jax.Array, jax.Array],
                      pos: jax.Array, config: GPTConfig) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Logits ``[batch, vocab]`` for int ids ``[batch]`` at position ``pos``, with a KV cache.

    ``cache`` is ``(keys, values)``, each ``[layers, batch, key_position, heads, head_size]``;
    the returned cache holds this position's keys and values too. The layers run under
    ``lax.scan`` over the stacked weights and the per-layer caches.
    """
    x = params["wte"][ids] + params["wpe"][pos]
    stacked = {k: v for k, v in params.items() if k not in _GLOBAL}

    def layer(x, inputs):
        p, keys, values = inputs
        h = _layer_norm(x, p["ln1_g"], p["ln1_b"])
        q, k, v = jnp.einsum("be,ezhk->zbhk", h, p["w_qkv"]) + p["b_qkv"][:, None]
        keys = jax.lax.dynamic_update_slice_in_dim(keys, k[:, None], pos, axis=1)
        values = jax.lax.dynamic_update_slice_in_dim(values, v[:, None], pos, axis=1)
        scores = jnp.einsum("bhk,bthk->bht", q, keys) / jnp.sqrt(q.shape[-1])
        scores = jnp.where(jnp.arange(keys.shape[1]) <= pos, scores, jnp.finfo(scores.dtype).min)
        answers = jnp.einsum("bht,bthk->bhk", jax.nn.softmax(scores, axis=-1), values)
        x = x + jnp.einsum("bhk,hke->be", answers, p["w_out"]) + p["b_out"]
        h = _layer_norm(x, p["ln2_g"], p["ln2_b"])
        h = jax.nn.gelu(h @ p["w_up"] + p["b_up"], approximate=True)
        return x + h @ p["w_down"] + p["b_down"], (keys, values)

    x, cache = jax.lax.scan(layer, x, (stacked, *cache))
    x = _layer_norm(x, params["lnf_g"], params["lnf_b"])
    return x @ params["wte"].T, cache


def plain_loss(params: dict[str, jax.Array], inputs: jax.Array, targets: jax.Array, config: GPTConfig) -> jax.Array:
    """Mean next-token cross-entropy in nats."""
    logits = plain_forward(params, inputs, config)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


__all__ = ["plain_decode_step", "plain_forward", "plain_loss", "plain_params"]
