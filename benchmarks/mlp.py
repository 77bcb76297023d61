"""Named 2-layer MLP training step vs the same MLP in plain jnp, both under ``jax.jit``.

Run: ``python benchmarks/mlp.py [--batch 64 --embed 512 --hidden 2048 --runs 9 --steps 5]``.
Prints a markdown table of same-run ratios (named / plain): step time, first call
(trace + compile + run), trace + lower, the cached-call time at a tiny size (dispatch
overhead), and the op counts of both optimized HLO modules.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import namax as nx  # noqa: E402
from _timing import hlo_instructions, hlo_op_counts, interleaved_first_calls, interleaved_medians, ratio  # noqa: E402

LEARNING_RATE = 1e-3


def init_params(embed: int, hidden: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Plain float32 weights shared by both versions."""
    rng = np.random.default_rng(seed)
    return {
        "w1": (rng.normal(size=(embed, hidden)) / np.sqrt(embed)).astype(np.float32),
        "b1": np.zeros(hidden, np.float32),
        "w2": (rng.normal(size=(hidden, embed)) / np.sqrt(hidden)).astype(np.float32),
        "b2": np.zeros(embed, np.float32),
    }


# --- plain jnp ----------------------------------------------------------------------------


def plain_loss(params, x, y):
    h = jnp.maximum(x @ params["w1"] + params["b1"], 0.0)
    out = h @ params["w2"] + params["b2"]
    return jnp.mean((out - y) ** 2)


def plain_step(params, x, y):
    loss, grads = jax.value_and_grad(plain_loss)(params, x, y)
    return loss, jax.tree.map(lambda p, g: p - LEARNING_RATE * g, params, grads)


# --- namax ----------------------------------------------------------------------------------


def named_params(params, Embed: nx.Axis, Hidden: nx.Axis, Out: nx.Axis):
    return {
        "w1": nx.named(params["w1"], (Embed, Hidden)),
        "b1": nx.named(params["b1"], (Hidden,)),
        "w2": nx.named(params["w2"], (Hidden, Out)),
        "b2": nx.named(params["b2"], (Out,)),
    }


def named_loss(params, x, y):
    Embed, Hidden = params["w1"].axes
    h = nx.maximum(nx.dot(x, params["w1"], axis=Embed) + params["b1"], 0.0)
    out = nx.dot(h, params["w2"], axis=Hidden) + params["b2"]
    return nx.mean((out - y) ** 2).array


def named_step(params, x, y):
    loss, grads = jax.value_and_grad(named_loss)(params, x, y)
    update = jax.tree.map(lambda p, g: p - LEARNING_RATE * g, params, grads,
                          is_leaf=lambda v: isinstance(v, nx.NamedArray))
    return loss, update


# --- measurement --------------------------------------------------------------------------


def make_args(batch: int, embed: int, hidden: int):
    """(plain args, named args) for one step, with the same values."""
    Batch, Embed, Hidden = nx.make_axes(batch=batch, embed=embed, hidden=hidden)
    Out = Embed.alias("out")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(batch, embed)).astype(np.float32)
    y = rng.normal(size=(batch, embed)).astype(np.float32)
    params = jax.device_put(init_params(embed, hidden))
    plain = (params, jnp.asarray(x), jnp.asarray(y))
    named = (named_params(params, Embed, Hidden, Out), nx.named(x, (Batch, Embed)), nx.named(y, (Batch, Out)))
    return plain, named


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--embed", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=9, help="timed runs (median taken), >= 7 recommended")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed run")
    args = parser.parse_args(argv)

    p_args, n_args = make_args(args.batch, args.embed, args.hidden)
    plain_jit, named_jit = jax.jit(plain_step), jax.jit(named_step)
    p_loss, p_new = plain_jit(*p_args)
    n_loss, n_new = named_jit(*n_args)
    np.testing.assert_allclose(n_loss, p_loss, rtol=1e-5)
    np.testing.assert_allclose(n_new["w1"].array, p_new["w1"], rtol=1e-5, atol=1e-6)

    step = interleaved_medians({"plain": lambda: plain_jit(*p_args), "named": lambda: named_jit(*n_args)},
                               runs=args.runs, steps=args.steps)
    first = interleaved_first_calls({"plain": lambda: jax.jit(plain_step)(*p_args),
                                     "named": lambda: jax.jit(named_step)(*n_args)})
    lower = interleaved_first_calls({"plain": lambda: jax.jit(plain_step).lower(*p_args) and None,
                                     "named": lambda: jax.jit(named_step).lower(*n_args) and None}, runs=5)
    tiny_p, tiny_n = make_args(2, 8, 16)
    dispatch = interleaved_medians({"plain": lambda: plain_jit(*tiny_p), "named": lambda: named_jit(*tiny_n)},
                                   runs=args.runs, steps=200)
    p_hlo = plain_jit.lower(*p_args).compile().as_text()
    n_hlo = named_jit.lower(*n_args).compile().as_text()
    p_ops, n_ops = hlo_op_counts(p_hlo), hlo_op_counts(n_hlo)
    if hlo_instructions(p_hlo) == hlo_instructions(n_hlo):
        verdict = "identical instructions"
    elif p_ops == n_ops:
        verdict = "same op counts"
    else:
        verdict = "different"

    print(f"MLP train step (forward + backward + SGD): batch {args.batch}, embed {args.embed}, "
          f"hidden {args.hidden}; jax {jax.__version__}, {jax.devices()[0].platform}, "
          f"median of {args.runs} runs x {args.steps} steps\n")
    print("| measure | plain jnp | namax | namax / plain |")
    print("|---|---|---|---|")
    print(f"| step time | {step['plain'] * 1e3:.3f} ms | {step['named'] * 1e3:.3f} ms | "
          f"{ratio(step['named'], step['plain'])} |")
    print(f"| first call (trace+compile+run) | {first['plain'] * 1e3:.1f} ms | {first['named'] * 1e3:.1f} ms | "
          f"{ratio(first['named'], first['plain'])} |")
    print(f"| trace + lower | {lower['plain'] * 1e3:.1f} ms | {lower['named'] * 1e3:.1f} ms | "
          f"{ratio(lower['named'], lower['plain'])} |")
    print(f"| cached call, tiny MLP (2x8x16) | {dispatch['plain'] * 1e6:.1f} us | {dispatch['named'] * 1e6:.1f} us | "
          f"{ratio(dispatch['named'], dispatch['plain'])} |")
    print(f"| optimized HLO ops | {sum(p_ops.values())} | {sum(n_ops.values())} | "
          f"{verdict} |")
    if p_ops != n_ops:
        diff = {op: (p_ops[op], n_ops[op]) for op in sorted(set(p_ops) | set(n_ops)) if p_ops[op] != n_ops[op]}
        print(f"\nop counts differing (plain, namax): {diff}")


if __name__ == "__main__":
    main()
