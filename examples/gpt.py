"""A GPT-2-style decoder written only in named code.

Token and position embeddings, ``config.layers`` pre-norm blocks (causal multi-head
attention and a GELU MLP) stored as one :class:`namax.nn.Stacked` (a ``layers`` axis, run
by ``lax.scan``), a final LayerNorm and logits from the tied token embedding.

>>> import jax
>>> config = GPTConfig(seq_len=8, embed=16, heads=2, layers=2)
>>> model = GPT.init(config, key=jax.random.key(0))
>>> ids = nx.zeros((nx.Axis("batch", 2), config.Pos), dtype=jnp.int32)
>>> model(ids).axes
(Axis('batch', 2), Axis('position', 8), Axis('vocab', 256))

Decoding with a KV cache (:class:`KVCache`, a ``key_position`` axis written by
``updated_slice``) lives in :meth:`GPT.decode_step`; ``examples/sample.py`` drives it.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp

import namax as nx
import namax.nn as nn
from namax import Axis, NamedArray


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Sizes of the model; each ``Axis`` property below names one dimension."""

    seq_len: int = 128
    embed: int = 128
    heads: int = 4
    layers: int = 4
    mlp_ratio: int = 4
    vocab: int = 256
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.embed % self.heads:
            raise ValueError(f"GPTConfig: embed={self.embed} is not divisible by heads={self.heads}")
        for field in ("seq_len", "embed", "heads", "layers", "mlp_ratio", "vocab"):
            if getattr(self, field) < 1:
                raise ValueError(f"GPTConfig: {field} must be >= 1, got {getattr(self, field)}")

    Pos = property(lambda self: Axis("position", self.seq_len))
    KPos = property(lambda self: Axis("key_position", self.seq_len))
    Embed = property(lambda self: Axis("embed", self.embed))
    Heads = property(lambda self: Axis("heads", self.heads))
    HeadSize = property(lambda self: Axis("head_size", self.embed // self.heads))
    Mlp = property(lambda self: Axis("mlp", self.embed * self.mlp_ratio))
    Vocab = property(lambda self: Axis("vocab", self.vocab))
    Layers = property(lambda self: Axis("layers", self.layers))
    Qkv = Axis("qkv", 3)


class KVCache(eqx.Module):
    """Keys and values of every layer, ``[layers, batch, key_position, heads, head_size]``."""

    k: NamedArray
    v: NamedArray

    @staticmethod
    def init(config: GPTConfig, Batch: Axis, dtype=jnp.float32) -> "KVCache":
        """An all-zero cache for ``Batch`` sequences of up to ``config.seq_len`` tokens."""
        axes = (config.Layers, Batch, config.KPos, config.Heads, config.HeadSize)
        return KVCache(nx.zeros(axes, dtype=dtype), nx.zeros(axes, dtype=dtype))


class Attention(eqx.Module):
    """Causal multi-head self-attention with one fused ``embed -> (qkv, heads, head_size)`` projection."""

    qkv: nn.Linear
    out: nn.Linear

    @staticmethod
    def init(config: GPTConfig, *, key: jax.Array) -> "Attention":
        k_qkv, k_out = jax.random.split(key)
        inner = (config.Heads, config.HeadSize)
        qkv = nn.Linear.init(config.Embed, (config.Qkv, *inner), key=k_qkv)
        out = nn.Linear.init(inner, config.Embed, key=k_out, init_scale=1.0 / (2 * config.layers) ** 0.5)
        return Attention(qkv, out)

    def _qkv(self, x: NamedArray) -> tuple[NamedArray, NamedArray, NamedArray]:
        q, k, v = nx.unbind(self.qkv(x), "qkv")
        return q, k.rename({"position": "key_position"}), v.rename({"position": "key_position"})

    def __call__(self, x: NamedArray, mask: NamedArray) -> NamedArray:
        q, k, v = self._qkv(x)
        # heads before positions: the score dot_general's natural output, [..., heads, position,
        # key_position], is then already in first-appearance order, so the largest tensor of the
        # model (the scores, and their gradient) is never transposed; q, k, v are 4x smaller
        q = q.rearrange((..., "heads", "position", "head_size"))
        k, v = (t.rearrange((..., "heads", "key_position", "head_size")) for t in (k, v))
        answers = nn.dot_product_attention("position", "key_position", "head_size", q, k, v, mask=mask)
        return self.out(answers)

    def decode(self, x: NamedArray, cache: KVCache, layer, pos) -> tuple[NamedArray, KVCache]:
        """One new position (``x`` has a ``position`` axis of size 1) at index ``pos``.

        Writes this layer's key and value into ``cache`` at ``(layer, pos)`` and attends
        over the cached positions ``<= pos``.
        """
        q, k, v = self._qkv(x)
        start = {"layers": layer, "key_position": pos}
        cache = KVCache(nx.updated_slice(cache.k, start, k), nx.updated_slice(cache.v, start, v))
        keys, values = cache.k["layers", layer], cache.v["layers", layer]
        visible = nx.arange(keys.resolve_axis("key_position")) <= pos
        answers = nn.dot_product_attention("position", "key_position", "head_size", q, keys, values, mask=visible)
        return self.out(answers), cache


class Block(eqx.Module):
    """Pre-norm transformer block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    ln1: nn.LayerNorm
    attn: Attention
    ln2: nn.LayerNorm
    mlp: nn.MLP

    @staticmethod
    def init(config: GPTConfig, *, key: jax.Array) -> "Block":
        k_attn, k_mlp = jax.random.split(key)
        mlp = nn.MLP.init(config.Embed, config.Embed, config.Mlp, depth=1, activation=nn.gelu, key=k_mlp)
        down = mlp.layers[-1]
        # GPT-2 scales the residual projections by 1/sqrt(2 * layers)
        down = eqx.tree_at(lambda lin: lin.weight, down, down.weight / (2 * config.layers) ** 0.5)
        mlp = eqx.tree_at(lambda m: m.layers, mlp, (*mlp.layers[:-1], down))
        return Block(nn.LayerNorm.init(config.Embed), Attention.init(config, key=k_attn),
                     nn.LayerNorm.init(config.Embed), mlp)

    def __call__(self, x: NamedArray, mask: NamedArray) -> NamedArray:
        x = x + self.attn(self.ln1(x), mask)
        return x + self.mlp(self.ln2(x))

    def decode(self, x: NamedArray, cache: KVCache, layer, pos) -> tuple[NamedArray, KVCache]:
        """:meth:`__call__` for one new position, reading and writing ``cache``."""
        attended, cache = self.attn.decode(self.ln1(x), cache, layer, pos)
        x = x + attended
        return x + self.mlp(self.ln2(x)), cache


class GPT(eqx.Module):
    """The decoder: ``model(ids)`` maps int ids ``[..., position]`` to logits ``[..., position, vocab]``."""

    token_embed: nn.Embedding
    pos_embed: nn.Embedding
    blocks: nn.Stacked
    ln_f: nn.LayerNorm
    config: GPTConfig = eqx.field(static=True)

    @staticmethod
    def init(config: GPTConfig, *, key: jax.Array) -> "GPT":
        """Random initial weights (GPT-2's scheme: N(0, init_std) embeddings)."""
        k_tok, k_pos, k_blocks = jax.random.split(key, 3)
        token_embed = nn.Embedding.init(config.Vocab, config.Embed, key=k_tok, init_scale=config.init_std)
        pos_embed = nn.Embedding.init(config.Pos, config.Embed, key=k_pos, init_scale=config.init_std)
        blocks = nn.Stacked.init(config.Layers, Block)(config, key=k_blocks)
        return GPT(token_embed, pos_embed, blocks, nn.LayerNorm.init(config.Embed), config)

    def __call__(self, ids: NamedArray) -> NamedArray:
        """Logits for every position of ``ids`` (whose ``position`` axis has size ``seq_len``)."""
        Pos = ids.resolve_axis("position")
        if Pos.size != self.config.seq_len:
            raise ValueError(f"GPT: ids have a position axis of size {Pos.size}, the model expects "
                             f"{self.config.seq_len} (decode shorter prompts with decode_step)")
        x = self.token_embed(ids) + self.pos_embed.weight
        mask = nn.causal_mask(self.config.Pos, self.config.KPos)
        x = self.blocks(x, mask)
        return self.token_embed.unembed(self.ln_f(x))

    def decode_step(self, ids: NamedArray, cache: KVCache, pos) -> tuple[NamedArray, KVCache]:
        """Logits ``[..., vocab]`` for the token ``ids`` (no position axis) at position ``pos``.

        ``pos`` may be traced. The cache gains this position's keys and values in every layer.
        """
        # pos and the layer number are in range by construction: promise it, so a traced index
        # is a dynamic_slice (int4 and LoRA weights stay factored) rather than a NaN-filling gather
        x = self.token_embed(ids) + nx.index(self.pos_embed.weight, {"position": pos}, mode="promise_in_bounds")
        x = x.broadcast_axis(Axis("position", 1))

        def layer_step(i, carry):
            x, cache = carry
            block = jax.tree_util.tree_map(lambda p: nx.index(p, {"layers": i}, mode="promise_in_bounds"),
                                           self.blocks.stacked, is_leaf=nx.is_named)
            return block.decode(x, cache, i, pos)

        x, cache = jax.lax.fori_loop(0, self.config.layers, layer_step, (x, cache))
        logits = self.token_embed.unembed(self.ln_f(x))
        return logits["position", 0], cache


def loss_fn(model: GPT, inputs: NamedArray, targets: NamedArray) -> jax.Array:
    """Mean next-token cross-entropy in nats (a scalar jax array)."""
    logits = model(inputs)
    return nn.cross_entropy_loss(logits, "vocab", targets).array


def num_parameters(model: eqx.Module) -> int:
    """The number of scalars in the model's arrays."""
    return sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array)))


__all__ = ["GPTConfig", "GPT", "Block", "Attention", "KVCache", "loss_fn", "num_parameters"]
