"""LoRA and int4 weights through ``use_implicit_args`` vs plain dense ``jax.jit``, same-run ratios.

Run: ``python benchmarks/quant.py [--sizes 2048 4096 --rank 16 --batch 16 --runs 7 --steps 5]``.
Prints a markdown table: LoRA forward vs ``x @ W`` and vs merging ``W + A B^T``; a LoRA
training step (``w`` frozen) vs the hand-written a/b-only step; int4
weight bytes per parameter (codes + scales), compiled temp bytes vs the dense f32 weight,
matvec (batch 1, one weight hot in the cache) and batch matmul time vs f32 dense, a batch-1
decode step through a stack of weights too large for the cache, trace + compile overhead vs
plain jit.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import namax.quant as qax
from _timing import interleaved_first_calls, interleaved_medians  # benchmarks/ is the script's folder


def lora_rows(d: int, rank: int, batch: int, runs: int, steps: int) -> list[tuple[str, str, str]]:
    """LoRA forward: implicit (factored) vs ``x @ W`` and vs the merged ``x @ (W + A B^T)``."""
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(d, d)).astype(np.float32) / np.sqrt(d))
    a = jnp.asarray(rng.normal(size=(d, rank)).astype(np.float32) / np.sqrt(d))
    b = jnp.asarray(rng.normal(size=(d, rank)).astype(np.float32))
    lw = qax.LoraWeight(w, a, b)
    x = jnp.asarray(rng.normal(size=(batch, d)).astype(np.float32))
    plain = jax.jit(lambda x, w: x @ w)
    lora = jax.jit(qax.use_implicit_args(lambda x, w: x @ w))
    merged = jax.jit(lambda x, w: x @ w.materialize())
    t = interleaved_medians({"plain": lambda: plain(x, w), "lora": lambda: lora(x, lw),
                             "merged": lambda: merged(x, lw)}, runs=runs, steps=steps)
    return [
        (f"LoRA r={rank} W {d}², batch {batch}: forward / `x@W`", f"{t['lora'] / t['plain']:.2f}x", "<= 1.1"),
        (f"LoRA r={rank} W {d}², batch {batch}: forward / merged `W+AB^T`", f"{t['lora'] / t['merged']:.2f}x",
         "well below 1"),
    ]


def lora_train_rows(d: int, rank: int, batch: int, runs: int, steps: int) -> list[tuple[str, str, str]]:
    """A jitted LoRA training step (loss, gradient, Adam update through ``lora.optimizer``; ``w``
    frozen) vs the hand-written step that differentiates and updates ``a`` and ``b`` only; and
    ``jax.grad`` alone with ``train_w=True`` vs frozen (``w``'s gradient dot, when it is returned)."""
    rng = np.random.default_rng(2)
    w = jnp.asarray(rng.normal(size=(d, d)).astype(np.float32) / np.sqrt(d))
    a = jnp.asarray(rng.normal(size=(d, rank)).astype(np.float32) / np.sqrt(d))
    b = jnp.asarray(rng.normal(size=(d, rank)).astype(np.float32))
    x = jnp.asarray(rng.normal(size=(batch, d)).astype(np.float32))
    scale = 1.0 / rank

    def make_step(loss, opt):  # params and optimizer state donated, as in a training loop
        @functools.partial(jax.jit, donate_argnums=(0, 1))
        def step(params, state, *rest):
            value, grads = jax.value_and_grad(loss)(params, *rest)
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state, value
        return step

    lora_opt = qax.lora.optimizer(optax.adam(1e-3))
    lora_step = make_step(qax.use_implicit_args(lambda lw, x: jnp.sum(jnp.tanh(x @ lw) ** 2)), lora_opt)
    hand_opt = optax.adam(1e-3)
    hand_step = make_step(lambda ab, w, x: jnp.sum(jnp.tanh(x @ w + (x @ ab[0]) @ ab[1].T * scale) ** 2), hand_opt)
    copy = lambda v: jnp.array(v, copy=True)  # noqa: E731  (each run owns its donated buffers)
    runs_state = {
        "hand": [(a, b), hand_opt.init((a, b)), hand_step, (copy(w), x)],
        "lora": [qax.LoraWeight(copy(w), copy(a), copy(b)), None, lora_step, (x,)],
        "train_w": [qax.LoraWeight(copy(w), copy(a), copy(b), train_w=True), None, lora_step, (x,)],
    }
    for entry in runs_state.values():
        if entry[1] is None:
            entry[1] = lora_opt.init(entry[0])

    def run(name):
        entry = runs_state[name]
        entry[0], entry[1], value = entry[2](entry[0], entry[1], *entry[3])
        return value

    t = interleaved_medians({name: functools.partial(run, name) for name in ("hand", "lora")}, runs=runs, steps=steps)
    # the gradient alone, returned from the jit: only here can a full-weight gradient survive
    grad = jax.jit(jax.grad(qax.use_implicit_args(lambda lw, x: jnp.sum(jnp.tanh(x @ lw) ** 2))))
    frozen, trained = runs_state["lora"][0], runs_state["train_w"][0]
    g = interleaved_medians({"frozen": lambda: grad(frozen, x), "train_w": lambda: grad(trained, x)},
                            runs=runs, steps=steps)
    return [
        (f"LoRA r={rank} W {d}², batch {batch}: Adam train step / hand-written a,b-only step",
         f"{t['lora'] / t['hand']:.2f}x", "<= 1.05"),
        (f"LoRA r={rank} W {d}², batch {batch}: `jax.grad` with `train_w=True` / frozen `w`",
         f"{g['train_w'] / g['frozen']:.2f}x", "> 1 (the full-weight gradient dot)"),
    ]


def int4_rows(d: int, batch: int, runs: int, steps: int) -> tuple[list, str]:
    """int4 (group 128): bytes/param, temp vs dense, time vs f32 at batch 1 and ``batch``; HLO summary."""
    rng = np.random.default_rng(1)
    w = jnp.asarray(rng.normal(size=(d, d)).astype(np.float32) / np.sqrt(d))
    q = qax.int4.quantize_array(w, group_size=128)
    dense = jax.jit(lambda x, w: x @ w)
    quant = jax.jit(qax.use_implicit_args(lambda x, w: x @ w))
    rows = []
    xs = {n: jnp.asarray(rng.normal(size=(n, d)).astype(np.float32)) for n in (1, batch)}
    compiled = quant.lower(xs[batch], q).compile()
    stats = compiled.memory_analysis()
    weight_args = stats.argument_size_in_bytes - xs[batch].size * 4
    rows.append((f"int4 W {d}²: weight bytes/param (codes + bf16 scales, compiled args)",
                 f"{weight_args / d ** 2:.4f}", "<= 0.53"))
    rows.append((f"int4 W {d}², batch {batch}: compiled temp / dense f32 weight",
                 f"{stats.temp_size_in_bytes / (4 * d ** 2):.3f}", "< 0.5"))
    for n, x in xs.items():
        t = interleaved_medians({"dense": lambda x=x: dense(x, w), "int4": lambda x=x: quant(x, q)},
                                runs=runs, steps=steps)
        label = "matvec (batch 1)" if n == 1 else f"batch {n} matmul"
        rows.append((f"int4 W {d}², {label}: time / f32 dense", f"{t['int4'] / t['dense']:.2f}x", "<= 1.3"))
    first = interleaved_first_calls({
        "plain": lambda: jax.jit(lambda x, w: x @ w.materialize()).lower(xs[batch], q).compile(),
        "implicit": lambda: jax.jit(qax.use_implicit_args(lambda x, w: x @ w)).lower(xs[batch], q).compile(),
    }, runs=3)
    rows.append((f"int4 W {d}²: trace+compile, use_implicit_args / plain jit (same int4 input)",
                 f"{first['implicit'] / first['plain']:.2f}x", "-"))
    return rows, _fusion_summary(compiled.as_text())


def decode_rows(d: int, layers: int, runs: int, steps: int) -> list[tuple[str, str, str]]:
    """A decode step through ``layers`` weights ``x = tanh(x @ W_l)``, batch 1: int4 vs f32.

    Unlike one hot weight, the f32 stack (``layers * 4 d²`` bytes) is larger than this CPU's
    32 MiB L3, so each call streams it from memory, as decoding a real model does.
    """
    rng = np.random.default_rng(2)
    ws = [jnp.asarray(rng.normal(size=(d, d)).astype(np.float32) / np.sqrt(d)) for _ in range(layers)]
    qs = [qax.int4.quantize_array(w, group_size=128) for w in ws]
    x = jnp.asarray(rng.normal(size=(1, d)).astype(np.float32))

    def model(x, weights):
        for w in weights:
            x = jnp.tanh(x @ w)
        return x

    dense, quant = jax.jit(model), jax.jit(qax.use_implicit_args(model))
    t = interleaved_medians({"dense": lambda: dense(x, ws), "int4": lambda: quant(x, qs)}, runs=runs, steps=steps)
    mib = layers * 4 * d * d / 2 ** 20
    return [(f"int4 decode step, {layers} layers of W {d}² ({mib:.0f} MiB f32), batch 1: time / f32 dense",
             f"{t['int4'] / t['dense']:.2f}x", "<= 1.3")]


def _fusion_summary(hlo: str) -> str:
    """The fusions (kind and result shape) of the compiled int4 program, one per line."""
    lines = []
    for line in hlo.splitlines():
        if " fusion(" in line and "kind=" in line:
            name = line.split("=")[0].strip()
            shape = line.split("=")[1].split("fusion(")[0].strip()
            kind = line.split("kind=")[1].split(",")[0]
            lines.append(f"  {name}: {shape} {kind}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    if args.runs < 7:
        raise SystemExit(f"--runs must be >= 7 (medians of at least 7 runs), got {args.runs}")
    rows, fusions = [], {}
    for d in args.sizes:
        rows += lora_rows(d, args.rank, args.batch, args.runs, args.steps)
        rows += lora_train_rows(d, args.rank, args.batch, args.runs, args.steps)
        int4, fusions[d] = int4_rows(d, args.batch, args.runs, args.steps)
        rows += int4
        rows += decode_rows(d, max(2, 2 ** 27 // (4 * d * d)), args.runs, args.steps)
    print(f"backend: {jax.default_backend()}, int4 dot form: {qax.int4_dot.form()}, "
          f"CPU_TILE_BYTES={qax.int4_dot.CPU_TILE_BYTES}, CPU_MIN_CHUNKS={qax.int4_dot.CPU_MIN_CHUNKS}\n")
    print("| measurement | value | target |\n|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")
    for d, text in fusions.items():
        print(f"\nfusions of the compiled int4 x@W, W {d}², batch {args.batch}:\n{text}")


if __name__ == "__main__":
    main()
