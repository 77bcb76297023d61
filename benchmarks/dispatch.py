"""Cached-call dispatch of a named module's forward+backward, against ``jax.jit`` on a plain dict.

Run: ``python benchmarks/dispatch.py`` (``--runs N --calls M`` for more samples, ``--model``
for one model). Two tiny models, so that the Python work around a call, not the
computation, dominates: benchmarks/namedjit.py's GPT-style block as an Equinox module of
six NamedArrays, and :class:`namax.models.gpt2.Gpt2Block` (nine nested Equinox modules,
twelve NamedArrays). For each, every case runs the same compiled program
(``value_and_grad`` of the block's loss); only what is passed differs:

* ``jax.jit, plain dict``: the block's arrays as a ``{path: array}`` dict plus the raw inputs
  (the baseline; the function rebuilds the module while tracing, which costs nothing per call);
* ``jax.jit, named module``: the module and NamedArray inputs, flattened by JAX;
* ``eqx.filter_jit, named module``;
* ``nx.namedjit, named module``.

Prints, per model, ``case | us per cached call | over jax.jit on a plain dict``: the median
over ``--runs`` interleaved runs (the cases take turns run by run, so drift of a shared host
hits all of them alike) of the mean of ``--calls`` back-to-back calls each; then the same
in CPU time of this process (``time.process_time``), which leaves out the time spent
waiting for a core and so stays comparable when the host is loaded (the load average is
printed in the header).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp

import namax as nx
from namax.models.gpt2 import GPT2Config, Gpt2Block


Batch, Pos, Embed, Head, Key, Mlp = nx.make_axes(batch=2, position=4, embed=8, head=2, key=4, mlp=16)
KPos = Pos.alias("key_position")


class Block(eqx.Module):
    """benchmarks/namedjit.py's GPT-style block as an Equinox module of six NamedArrays (tiny sizes)."""

    wq: nx.NamedArray
    wk: nx.NamedArray
    wv: nx.NamedArray
    wo: nx.NamedArray
    w1: nx.NamedArray
    w2: nx.NamedArray

    @staticmethod
    def init(key) -> "Block":
        shapes = {"wq": (Embed, Head, Key), "wk": (Embed, Head, Key), "wv": (Embed, Head, Key),
                  "wo": (Head, Key, Embed), "w1": (Embed, Mlp), "w2": (Mlp, Embed)}
        return Block(**{n: nx.random.normal(k, ax) * 0.05
                        for k, (n, ax) in zip(jax.random.split(key, len(shapes)), shapes.items())})

    def __call__(self, x):
        def norm(v):
            c = v - nx.mean(v, Embed)
            return c / nx.sqrt(nx.mean(c * c, Embed) + 1e-5)

        h = norm(x)
        q = nx.dot(h, self.wq, axis=Embed)
        k = nx.dot(h, self.wk, axis=Embed).rename({"position": "key_position"})
        v = nx.dot(h, self.wv, axis=Embed).rename({"position": "key_position"})
        s = nx.dot(q, k, axis=Key) / Key.size ** 0.5
        s = nx.where(nx.arange(Pos).broadcast_axis(KPos) >= nx.arange(KPos), s, -1e9)
        e = nx.exp(s - nx.max(s, KPos))
        x = x + nx.dot(nx.dot(e / nx.sum(e, KPos), v, axis=KPos), self.wo, axis=(Head, Key))
        return x + nx.dot(nx.tanh(nx.dot(norm(x), self.w1, axis=Embed)), self.w2, axis=Mlp)


def block_model():
    """``(module, named inputs)``: the flat Block and ``x``."""
    return Block.init(jax.random.key(0)), (nx.random.normal(jax.random.key(1), (Batch, Pos, Embed)),)


def gpt2_block_model():
    """``(module, named inputs)``: a tiny namax.models.gpt2.Gpt2Block (nine nested modules), ``x`` and the mask."""
    config = GPT2Config(n_positions=4, n_embd=8, n_head=2, n_layer=1)
    block = Gpt2Block.init(config, key=jax.random.key(0))
    x = nx.random.normal(jax.random.key(1), (Pos, config.Embed))
    return block, (x, nx.nn.causal_mask(Pos, KPos))


MODELS = {"Block (6 NamedArrays)": block_model, "Gpt2Block (9 modules, 12 NamedArrays)": gpt2_block_model}


def loss(module, *inputs):
    return nx.mean(module(*inputs) ** 2).array


def cases(make_model) -> dict:
    """``{case: zero-argument callable}``: one cached call of ``value_and_grad(loss)`` each."""
    module, inputs = make_model()
    leaves, treedef = jax.tree_util.tree_flatten(module)
    names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(module)[0]]
    plain = dict(zip(names, leaves))
    raw = tuple(x.array for x in inputs)
    in_axes = tuple(x.axes for x in inputs)

    def plain_loss(params, *arrays):  # rebuilds the module while tracing only
        rebuilt = jax.tree_util.tree_unflatten(treedef, [params[n] for n in names])
        return loss(rebuilt, *(nx.NamedArray(a, ax) for a, ax in zip(arrays, in_axes)))

    grad_plain = jax.jit(jax.value_and_grad(plain_loss))
    grad_named = jax.jit(jax.value_and_grad(loss))
    grad_eqx = eqx.filter_jit(jax.value_and_grad(loss))
    grad_nx = nx.namedjit(jax.value_and_grad(loss))
    return {
        "jax.jit, plain dict": lambda: grad_plain(plain, *raw),
        "jax.jit, named module": lambda: grad_named(module, *inputs),
        "eqx.filter_jit, named module": lambda: grad_eqx(module, *inputs),
        "nx.namedjit, named module": lambda: grad_nx(module, *inputs),
    }


def interleaved_us(calls: dict, runs: int, per_run: int, warmup: int = 3,
                   clock=time.perf_counter_ns) -> dict[str, float]:
    """Median over ``runs`` of the mean microseconds per call in ``per_run`` back-to-back calls,
    the candidates taking turns run by run. ``clock`` is wall time by default;
    ``time.process_time_ns`` (CPU time of this process, all threads) leaves out the time spent
    waiting for a core on a shared host."""
    return {name: statistics.median(s) for name, s in interleaved_samples(calls, runs, per_run, warmup,
                                                                           (clock,))[0].items()}


def interleaved_samples(calls: dict, runs: int, per_run: int, warmup: int = 3,
                        clocks=(time.perf_counter_ns, time.process_time_ns)) -> list[dict[str, list[float]]]:
    """Per clock, ``{name: [us per call in each run]}``; the candidates take turns run by run."""
    for fn in calls.values():
        for _ in range(warmup):
            jax.block_until_ready(fn())
    samples = [{name: [] for name in calls} for _ in clocks]
    for _ in range(runs):
        for name, fn in calls.items():
            out = None
            t0 = [clock() for clock in clocks]
            for _ in range(per_run):
                out = fn()
            jax.block_until_ready(out)
            t1 = [clock() for clock in clocks]
            for per_clock, a, b in zip(samples, t0, t1):
                per_clock[name].append((b - a) / per_run / 1e3)
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=41, help="interleaved runs (the median is taken over them)")
    ap.add_argument("--calls", type=int, default=100, help="back-to-back cached calls per run")
    ap.add_argument("--model", choices=["all", *MODELS], default="all")
    args = ap.parse_args()
    calls = {}
    for model, make in MODELS.items():
        if args.model not in ("all", model):
            continue
        model_calls = cases(make)
        ref = float(model_calls["jax.jit, plain dict"]()[0])
        for case, fn in model_calls.items():  # the same program: the same loss
            value = float(fn()[0])
            if abs(value - ref) > 1e-5 * max(1.0, abs(ref)):
                raise AssertionError(f"{model}, {case}: loss {value} differs from the plain dict's {ref}")
            calls[(model, case)] = fn
    wall, cpu = interleaved_samples(calls, args.runs, args.calls)
    wall = {k: statistics.median(v) for k, v in wall.items()}
    cpu = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"value_and_grad of a GPT-style block, cached calls on tiny inputs: median of {args.runs} interleaved "
          f"runs x {args.calls} calls; jax {jax.__version__}, equinox {eqx.__version__}, {jax.devices()[0].platform}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print("(wall: time.perf_counter; CPU: time.process_time of this process, which leaves out waiting for a "
          "core on a shared host)")
    for model in MODELS:
        if args.model not in ("all", model):
            continue
        base, base_cpu = wall[(model, "jax.jit, plain dict")], cpu[(model, "jax.jit, plain dict")]
        print()
        print(f"{model}:")
        print()
        print("| case | us per cached call | over jax.jit on a plain dict | CPU us per call | CPU over plain dict |")
        print("|---|---|---|---|---|")
        for (m, case), t in wall.items():
            if m == model:
                c = cpu[(m, case)]
                print(f"| {case} | {t:.1f} | {t - base:+.1f} us | {c:.1f} | {c - base_cpu:+.1f} us |")


if __name__ == "__main__":
    main()
