"""Training throughput of the named GPT under ``namedjit`` vs the same GPT in plain jnp under ``jax.jit``.

Both run the same AdamW step from the same weights on the same batch. Timings alternate
between the two programs in rounds (the host's speed drifts), and the table reports
medians. Model FLOPs utilisation = ``compiled.cost_analysis()["flops"]`` per step divided
by the step time and by the peak rate, which on a CPU is taken as the FLOP/s of a large
f32 matmul measured in the same run (so MFU here means "fraction of what this host's
GEMM reaches").

    python benchmarks/train.py [--embed 128 --layers 4 --seq-len 128 --batch-size 16 --rounds 5]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))

import namax as nx  # noqa: E402
from gpt import GPT, GPTConfig, loss_fn  # noqa: E402
from gpt_reference import plain_loss, plain_params  # noqa: E402
from lm_data import batch_at, load_corpus  # noqa: E402


def _time(fn, *args, calls: int) -> tuple[float, float]:
    """``(wall, cpu)`` seconds per call of ``fn(*args)`` (outputs blocked on), over ``calls`` calls.

    CPU seconds (all threads of this process) barely move when other processes load the
    host, so their ratio is the steadier comparison on a shared machine.
    """
    jax.block_until_ready(fn(*args))
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(calls):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / calls, (time.process_time() - c0) / calls


def matmul_peak(n: int = 1024, calls: int = 10) -> float:
    """FLOP/s of an ``n x n`` f32 matmul on this host (the 'peak' for MFU)."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    return 2 * n ** 3 / _time(f, a, calls=calls)[0]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--embed", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=5, help="steps per timing round")
    args = p.parse_args(argv)

    config = GPTConfig(seq_len=args.seq_len, embed=args.embed, heads=args.heads, layers=args.layers)
    model = eqx.filter_jit(GPT.init)(config, key=jax.random.key(0))
    params, static = eqx.partition(model, eqx.is_array)
    plain = plain_params(model)
    optimizer = optax.adamw(1e-3, weight_decay=0.1)
    x, y = batch_at(load_corpus()[0], 0, args.batch_size, args.seq_len)
    Batch = nx.Axis("batch", args.batch_size)
    nx_x, nx_y = (nx.named(jnp.asarray(a), (Batch, config.Pos)) for a in (x, y))
    mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:1])

    def named_step(params, opt_state, inputs, targets):
        loss, grads = jax.value_and_grad(lambda p: loss_fn(eqx.combine(p, static), inputs, targets))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def plain_step(params, opt_state, inputs, targets):
        loss, grads = jax.value_and_grad(plain_loss)(params, inputs, targets, config)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    named_fn = nx.namedjit(named_step, axis_resources={"batch": "data"}, mesh=mesh)
    named_jax_fn = jax.jit(named_step)
    plain_fn = jax.jit(plain_step)
    named_args = (params, optimizer.init(params), nx_x, nx_y)
    plain_args = (plain, optimizer.init(plain), jnp.asarray(x), jnp.asarray(y))
    loss_named = float(named_fn(*named_args)[2])
    loss_plain = float(plain_fn(*plain_args)[2])

    flops = {}
    programs = {"plain": (plain_fn, plain_args), "named_jax": (named_jax_fn, named_args),
                "named": (named_fn, named_args)}
    for name, (fn, a) in programs.items():
        compiled = (fn._current_jit() if name == "named" else fn).lower(*a).compile()
        flops[name] = compiled.cost_analysis()["flops"]

    times = {name: [] for name in programs}
    cpu = {name: [] for name in programs}
    for _ in range(args.rounds):
        for name, (fn, a) in programs.items():
            wall, used = _time(fn, *a, calls=args.calls)
            times[name].append(wall)
            cpu[name].append(used)
    peak = matmul_peak()
    tokens = args.batch_size * args.seq_len
    rows = {}
    for name in programs:
        t = statistics.median(times[name])
        rows[name] = {"ms": 1e3 * t, "cpu_ms": 1e3 * statistics.median(cpu[name]), "tok_s": tokens / t,
                      "gflop": flops[name] / 1e9, "mfu": flops[name] / t / peak}
    ratio = rows["named"]["tok_s"] / rows["plain"]["tok_s"]
    cpu_ratio = rows["plain"]["cpu_ms"] / rows["named"]["cpu_ms"]
    print(f"GPT embed={args.embed} heads={args.heads} layers={args.layers} seq={args.seq_len} "
          f"batch={args.batch_size}; {os.cpu_count()} CPUs; matmul peak {peak / 1e9:.1f} GFLOP/s; "
          f"first-step loss named {loss_named:.6f} / plain {loss_plain:.6f}\n")
    print("| program | step (ms) | CPU (ms/step) | tokens/s | GFLOP/step (cost_analysis) | MFU |")
    print("|---|---|---|---|---|---|")
    labels = {"plain": "plain jnp GPT, `jax.jit`", "named_jax": "named GPT, `jax.jit`",
              "named": "named GPT, `namedjit` {batch: data}"}
    for name in programs:
        r = rows[name]
        print(f"| {labels[name]} | {r['ms']:.1f} | {r['cpu_ms']:.1f} | {r['tok_s']:,.0f} | {r['gflop']:.2f} "
              f"| {100 * r['mfu']:.1f}% |")
    print(f"\nnamed / plain tokens/s: {ratio:.3f} (wall), {cpu_ratio:.3f} (per CPU second)")
    return {"ratio": ratio, "cpu_ratio": cpu_ratio, **{f"{k}_{m}": v for k, r in rows.items() for m, v in r.items()}}


if __name__ == "__main__":
    main()
