"""One decode step (batch 1, KV cache) of a wide GPT: plain jnp vs named, dense and int4.

Candidates, timed interleaved in one process (medians of ``--runs`` >= 7):

* ``plain``: ``examples/gpt_reference.plain_decode_step`` under ``jax.jit``, weights stored
  as a JAX user writes them (``x @ W`` with ``W`` (in, out)), layers under ``lax.scan``;
* ``named``: ``GPT.decode_step`` from ``examples/gpt.py`` (the same weights) under
  ``jax.jit``, with the layouts ``namax.layout`` picks;
* ``named, skinny rule off``: the same with the table's weight-first rule switched off;
* ``named int4``: every ``nn.Linear`` weight in int4 (group 128), through ``use_implicit_args``.

    python benchmarks/decode.py [--embed 1024 --layers 4 --seq-len 64 --runs 9]
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys

import equinox as eqx
import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))

import namax as nx  # noqa: E402
import namax.nn as nn  # noqa: E402
import namax.quant as qax  # noqa: E402
from benchmarks._timing import interleaved_medians  # noqa: E402
from gpt import GPT, GPTConfig, KVCache  # noqa: E402
from gpt_reference import plain_decode_step, plain_params  # noqa: E402
from namax import layout  # noqa: E402

Batch = nx.Axis("batch", 1)


def quantize_linears(model: GPT, group_size: int = 128) -> GPT:
    """``model`` with every ``nn.Linear`` weight an int4 weight grouped along its ``In`` axes."""
    def quantize(node):
        if not isinstance(node, nn.Linear):
            return node
        ins = tuple(a.name for a in (node.In if isinstance(node.In, tuple) else (node.In,)))
        stack = ("layers",) if node.weight.has_axis("layers") else ()
        return eqx.tree_at(lambda lin: lin.weight, node,
                           qax.int4.quantize_named(node.weight, ins, stack, group_size=group_size))

    return jax.tree_util.tree_map(quantize, model, is_leaf=lambda n: isinstance(n, nn.Linear))


def named_step(model: GPT, token: jax.Array, cache: KVCache, pos: jax.Array) -> tuple[jax.Array, KVCache]:
    logits, cache = model.decode_step(nx.named(token, Batch), cache, pos)
    return logits.array, cache


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embed", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--steps", type=int, default=5)
    opts = parser.parse_args(argv)
    if opts.runs < 7:
        parser.error("--runs must be >= 7 (medians of at least 7 interleaved runs)")
    config = GPTConfig(seq_len=opts.seq_len, embed=opts.embed, heads=max(1, opts.embed // 64), layers=opts.layers)
    model = GPT.init(config, key=jax.random.key(0))
    qmodel = quantize_linears(model)
    params = plain_params(model)
    token, pos = jnp.array([7], jnp.int32), jnp.int32(opts.seq_len // 2)
    cache = KVCache.init(config, Batch)
    plain_cache = (cache.k.rearrange(("layers", "batch", "key_position", "heads", "head_size")).array,) * 2

    plain = jax.jit(plain_decode_step, static_argnums=4)
    named = jax.jit(named_step)
    int4 = jax.jit(qax.use_implicit_args(named_step))
    want = plain(params, token, plain_cache, pos, config)[0]
    got = named(model, token, cache, pos)[0]  # traced (and cached) with the table as it is
    if not jnp.allclose(got, want, rtol=1e-4, atol=1e-4):
        raise SystemExit("named and plain decode steps disagree")
    row = layout.LAYOUTS["cpu"]
    try:  # a fresh function, so JAX's trace cache cannot hand back the program traced above
        layout.LAYOUTS["cpu"] = dataclasses.replace(row, skinny_rows=0)
        rule_off = jax.jit(lambda *args: named_step(*args)).lower(model, token, cache, pos).compile()
    finally:
        layout.LAYOUTS["cpu"] = row
    calls = {
        "plain": lambda: plain(params, token, plain_cache, pos, config),
        "named": lambda: named(model, token, cache, pos),
        "named, skinny rule off": lambda: rule_off(model, token, cache, pos),
        "named int4": lambda: int4(qmodel, token, cache, pos),
    }
    t = interleaved_medians(calls, runs=opts.runs, steps=opts.steps)
    dense_bytes = qax.int4.weight_bytes(eqx.filter(model, eqx.is_array))
    int4_bytes = qax.int4.weight_bytes(eqx.filter(qmodel, eqx.is_array))
    print(f"GPT embed {opts.embed}, {opts.layers} layers, batch 1, one decode step at position {int(pos)}; "
          f"weights {dense_bytes / 2 ** 20:.0f} MiB f32, {int4_bytes / 2 ** 20:.0f} MiB with int4 Linears\n")
    print("| program | ms | / plain |\n|---|---|---|")
    for name, seconds in t.items():
        print(f"| {name} | {seconds * 1e3:.2f} | {seconds / t['plain']:.2f} |")


if __name__ == "__main__":
    main()
