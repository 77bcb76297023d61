"""Named ``Linear`` vs hand-written layouts of ``y = x W`` on the default backend.

Candidates, timed interleaved in one process (medians of ``--runs`` >= 7):

* ``naive``: ``x @ W`` with ``W`` stored ``(in, out)`` (contract x's last, W's first dim);
* ``hand_nt``: ``W`` stored ``(out, in)``, ``dot_general(x, W, contract (1, 1))``;
* ``hand_wx``: ``W`` stored ``(out, in)`` on the left, ``dot_general(W, x, contract (1, 1))``
  then ``.T`` (behind an ``optimization_barrier`` for more than one row, which keeps XLA from
  folding the transpose back into ``hand_nt``);
* ``named``: ``namax.nn.Linear(In, Out)`` with the layout ``namax.layout`` picks.

Each row prints ``nt / naive``, ``wx / naive``, ``named / best hand`` and ``named / naive``
for the forward pass and for forward + backward (gradients for W and x), plus the number
of weight-sized transposes and copies in named's optimized HLO (0: the weight was never
copied to change its layout; the small transpose of a ``hand_wx``-form result is not one).

    python benchmarks/layout.py --batches 1,16,256 --widths 1024,2048,4096 --runs 7
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys

import jax
import jax.numpy as jnp
from jax import lax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import namax as nx  # noqa: E402
from benchmarks._timing import interleaved_medians  # noqa: E402
from namax import nn  # noqa: E402
from namax.layout import layout_for  # noqa: E402


def _loss(y: jax.Array) -> jax.Array:
    return jnp.sum(y * y)


def candidates(batch: int, width: int) -> tuple[dict, dict, str]:
    """Zero-argument callables for the forward and forward+backward passes, and named's HLO."""
    Batch, In, Out = nx.Axis("batch", batch), nx.Axis("embed", width), nx.Axis("mlp", width)
    key = jax.random.key(0)
    lin = nn.Linear.init(In, Out, key=key, use_bias=False)
    w_io = lin.weight.rearrange((In, Out)).array
    w_oi = lin.weight.rearrange((Out, In)).array
    x = jax.random.normal(jax.random.fold_in(key, 1), (batch, width))
    xn = nx.named(x, (Batch, In))

    naive = lambda w, x: x @ w  # noqa: E731
    hand_nt = lambda w, x: lax.dot_general(x, w, (((1,), (1,)), ((), ())))  # noqa: E731
    barrier = lax.optimization_barrier if batch > 1 else (lambda y: y)
    hand_wx = lambda w, x: barrier(lax.dot_general(w, x, (((1,), (1,)), ((), ())))).T  # noqa: E731
    named = lambda m, x: m(x).rearrange((Batch, Out)).array  # noqa: E731

    forms = (("naive", naive), ("hand_nt", hand_nt), ("hand_wx", hand_wx), ("named", named))
    fwd = {k: jax.jit(f) for k, f in forms}
    grad = {k: jax.jit(jax.grad(lambda p, x, f=f: _loss(f(p, x)), argnums=(0, 1))) for k, f in forms}
    args = {"naive": (w_io, x), "hand_nt": (w_oi, x), "hand_wx": (w_oi, x), "named": (lin, xn)}
    f_calls = {k: (lambda k=k: fwd[k](*args[k])) for k in fwd}
    g_calls = {k: (lambda k=k: grad[k](*args[k])) for k in grad}
    hlo = grad["named"].lower(lin, xn).compile().as_text()
    return f_calls, g_calls, hlo


def weight_copies(hlo: str, weight_elements: int) -> int:
    """Transposes and copies in ``hlo`` whose result is as large as the weight."""
    count = 0
    for line in hlo.splitlines():
        match = re.search(r"=\s*\w+\[([\d,]*)\]\S*\s+(transpose|copy)\(", line)
        if match and math.prod(int(d) for d in match.group(1).split(",") if d) >= weight_elements:
            count += 1
    return count


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,16,256")
    parser.add_argument("--widths", default="1024,2048,4096")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3)
    opts = parser.parse_args(argv)
    if opts.runs < 7:
        parser.error("--runs must be >= 7 (medians of at least 7 interleaved runs)")
    row = layout_for()
    print(f"backend={jax.default_backend()} weight_out_first={row.weight_out_first} measured={row.measured}")
    print("batch width | fwd: naive ms  nt/naive  wx/naive  named/best  named/naive | fwd+bwd: naive ms  "
          "nt/naive  wx/naive  named/best  named/naive | named copies")
    for batch in (int(b) for b in opts.batches.split(",")):
        for width in (int(w) for w in opts.widths.split(",")):
            f_calls, g_calls, hlo = candidates(batch, width)
            cells = []
            for calls in (f_calls, g_calls):
                m = interleaved_medians(calls, runs=opts.runs, steps=opts.steps)
                best = min(m["naive"], m["hand_nt"], m["hand_wx"])
                cells.append(f"{m['naive'] * 1e3:8.2f}  {m['hand_nt'] / m['naive']:5.2f}x  "
                             f"{m['hand_wx'] / m['naive']:5.2f}x  {m['named'] / best:5.2f}x  "
                             f"{m['named'] / m['naive']:5.2f}x")
            print(f"{batch:5d} {width:5d} | {cells[0]} | {cells[1]} | {weight_copies(hlo, width * width)}",
                  flush=True)


if __name__ == "__main__":
    main()
