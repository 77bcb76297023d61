"""Timing compiled programs fairly on a shared host: medians of interleaved runs.

A leaf module (it imports only JAX): :func:`namax.plan`'s ``measure=`` and the benchmarks
in ``benchmarks/`` time candidates with the same :func:`interleaved_medians`.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Mapping

import jax


def block(tree: Any) -> Any:
    """Wait for every array in ``tree``; returns ``tree``."""
    return jax.block_until_ready(tree)


def interleaved_medians(calls: Mapping[str, Callable[[], Any]], runs: int = 7, steps: int = 5,
                        warmup: int = 2, settle: int = 0) -> dict[str, float]:
    """Median seconds per call of each zero-argument callable.

    Each run times ``steps`` back-to-back calls and blocks once at the end; the candidates
    take turns run by run, starting one later each run (so none always follows the same
    one). ``settle`` untimed calls precede each timed run: what one candidate leaves behind
    (freed buffers, a heavy program's cold caches) is then not charged to the next, which
    matters when candidates differ a lot in size.

    >>> import jax.numpy as jnp
    >>> f = jax.jit(lambda: jnp.ones(3) * 2)
    >>> sorted(interleaved_medians({"f": f}, runs=3, steps=2, settle=1))
    ['f']
    """
    if runs < 1 or steps < 1 or settle < 0:
        raise ValueError(f"runs and steps must be >= 1 and settle >= 0, got runs={runs}, steps={steps}, "
                         f"settle={settle}")
    for fn in calls.values():
        for _ in range(warmup):
            block(fn())
    samples: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls.items())
    for r in range(runs):
        for name, fn in order[r % len(order):] + order[:r % len(order)]:
            for _ in range(settle):
                block(fn())
            start = time.perf_counter()
            out = None
            for _ in range(steps):
                out = fn()
            block(out)
            samples[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(s) for name, s in samples.items()}


__all__ = ["block", "interleaved_medians"]
