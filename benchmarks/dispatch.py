"""Cached-call dispatch of a named module's forward+backward, against ``jax.jit`` on a plain dict.

Run: ``python benchmarks/dispatch.py`` (``--runs N --calls M`` for more samples). The model is
a tiny :class:`namax.models.gpt2.Gpt2Block` (an Equinox module whose leaves are NamedArrays)
so that the Python work around a call, not the computation, dominates. Every case runs the
same compiled program (``value_and_grad`` of the block's loss); only what is passed differs:

* ``jax.jit, plain dict``: the block's arrays as a ``{path: array}`` dict plus the raw inputs
  (the baseline; the function rebuilds the module while tracing, which costs nothing per call);
* ``jax.jit, named module``: the module and NamedArray inputs, flattened by JAX;
* ``eqx.filter_jit, named module``;
* ``nx.namedjit, named module``.

Prints ``case | us per cached call | over jax.jit on a plain dict``: the median over
``--runs`` interleaved runs (the cases take turns run by run, so drift of a shared host
hits all of them alike) of the mean of ``--calls`` back-to-back calls each.
"""

from __future__ import annotations

import argparse
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp

import namax as nx
from namax.models.gpt2 import GPT2Config, Gpt2Block


def make_block_and_inputs():
    """The tiny block, a NamedArray input and the causal mask."""
    config = GPT2Config(n_positions=4, n_embd=8, n_head=2, n_layer=1)
    block = Gpt2Block.init(config, key=jax.random.key(0))
    Pos = nx.Axis("position", 4)
    x = nx.random.normal(jax.random.key(1), (Pos, config.Embed))
    mask = nx.nn.causal_mask(Pos, Pos.alias("key_position"))
    return block, x, mask


def loss(block, x, mask):
    return nx.mean(block(x, mask) ** 2).array


def cases():
    """``{name: zero-argument callable}``: one cached call each."""
    block, x, mask = make_block_and_inputs()
    leaves, treedef = jax.tree_util.tree_flatten(block)
    names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(block)[0]]
    plain = dict(zip(names, leaves))
    x_raw, mask_raw = x.array, mask.array
    x_axes, mask_axes = x.axes, mask.axes

    def plain_loss(params, xa, ma):  # rebuilds the module while tracing only
        module = jax.tree_util.tree_unflatten(treedef, [params[n] for n in names])
        return loss(module, nx.NamedArray(xa, x_axes), nx.NamedArray(ma, mask_axes))

    grad_plain = jax.jit(jax.value_and_grad(plain_loss))
    grad_named = jax.jit(jax.value_and_grad(loss))
    grad_eqx = eqx.filter_jit(jax.value_and_grad(loss))
    grad_nx = nx.namedjit(jax.value_and_grad(loss))
    return {
        "jax.jit, plain dict": lambda: grad_plain(plain, x_raw, mask_raw),
        "jax.jit, named module": lambda: grad_named(block, x, mask),
        "eqx.filter_jit, named module": lambda: grad_eqx(block, x, mask),
        "nx.namedjit, named module": lambda: grad_nx(block, x, mask),
    }


def interleaved_us(calls: dict, runs: int, per_run: int, warmup: int = 3) -> dict[str, float]:
    """Median over ``runs`` of the mean microseconds per call in ``per_run`` back-to-back calls."""
    for fn in calls.values():
        for _ in range(warmup):
            jax.block_until_ready(fn())
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, fn in calls.items():
            out = None
            t0 = time.perf_counter_ns()
            for _ in range(per_run):
                out = fn()
            jax.block_until_ready(out)
            samples[name].append((time.perf_counter_ns() - t0) / per_run / 1e3)
    return {name: statistics.median(s) for name, s in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=41, help="interleaved runs (the median is taken over them)")
    ap.add_argument("--calls", type=int, default=200, help="back-to-back cached calls per run")
    args = ap.parse_args()
    calls = cases()
    outs = {name: fn() for name, fn in calls.items()}
    ref = float(outs["jax.jit, plain dict"][0])
    for name, (value, _) in outs.items():  # the same program: the same loss
        if abs(float(value) - ref) > 1e-5 * max(1.0, abs(ref)):
            raise AssertionError(f"{name}: loss {float(value)} differs from the plain dict's {ref}")
    us = interleaved_us(calls, args.runs, args.calls)
    base = us["jax.jit, plain dict"]
    print(f"Gpt2Block (embed 8, 2 heads, 4 positions) value_and_grad, cached calls: median of {args.runs} "
          f"interleaved runs x {args.calls} calls; jax {jax.__version__}, {jax.devices()[0].platform}")
    print()
    print("| case | us per cached call | over jax.jit on a plain dict |")
    print("|---|---|---|")
    for name, t in us.items():
        print(f"| {name} | {t:.1f} | {t - base:+.1f} us |")


if __name__ == "__main__":
    main()
