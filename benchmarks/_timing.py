"""Shared timing helpers for the benchmarks: medians of interleaved runs, same-run ratios.

Every number a benchmark prints is a ratio against plain ``jax.jit`` measured in the same
process, with the candidates' runs interleaved so that drift of the shared host hits both.
"""

from __future__ import annotations

import collections
import re
import statistics
import time
from typing import Any, Callable, Mapping

import jax


def block(tree: Any) -> Any:
    """Wait for every array in ``tree``; returns ``tree``."""
    return jax.block_until_ready(tree)


def interleaved_medians(calls: Mapping[str, Callable[[], Any]], runs: int = 7, steps: int = 5,
                        warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each zero-argument callable.

    Each run times ``steps`` back-to-back calls and blocks once at the end; the candidates
    take turns run by run.

    >>> import jax.numpy as jnp
    >>> f = jax.jit(lambda: jnp.ones(3) * 2)
    >>> sorted(interleaved_medians({"f": f}, runs=3, steps=2))
    ['f']
    """
    if runs < 1 or steps < 1:
        raise ValueError(f"runs and steps must be >= 1, got runs={runs}, steps={steps}")
    for fn in calls.values():
        for _ in range(warmup):
            block(fn())
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, fn in calls.items():
            start = time.perf_counter()
            out = None
            for _ in range(steps):
                out = fn()
            block(out)
            samples[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(s) for name, s in samples.items()}


def interleaved_first_calls(makers: Mapping[str, Callable[[], Any]], runs: int = 3) -> dict[str, float]:
    """Median seconds of one cold call of each candidate, e.g. trace + lower + compile + run.

    Each ``maker`` builds a fresh ``jax.jit`` function and uses it once (call it, or just
    ``.lower`` it); its result is waited for. JAX's in-memory caches are cleared before
    every call so nothing carries over between candidates.
    """
    samples: dict[str, list[float]] = {name: [] for name in makers}
    for _ in range(runs):
        for name, make_and_call in makers.items():
            jax.clear_caches()
            start = time.perf_counter()
            block(make_and_call())
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


_HLO_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%\S+\s*=\s*.*?\s([a-z][a-z0-9\-]*)\(")


def hlo_op_counts(hlo_text: str) -> collections.Counter:
    """Opcode -> number of instructions in an HLO module's text (all computations)."""
    counts: collections.Counter = collections.Counter()
    for line in hlo_text.splitlines():
        match = _HLO_INSTRUCTION.match(line)
        if match:
            counts[match.group(1)] += 1
    return counts


def hlo_instructions(hlo_text: str) -> list[str]:
    """The module's instructions, sorted, with names, metadata and frontend attributes removed.

    Two programs that differ only in naming and debug information give equal lists.
    """
    out = []
    for line in hlo_text.splitlines():
        if not _HLO_INSTRUCTION.match(line):
            continue
        line = re.sub(r", (metadata|frontend_attributes)=\{[^}]*\}", "", line)
        out.append(re.sub(r"%[\w.\-]+", "%", line).strip())
    return sorted(out)


def ratio(value: float, baseline: float) -> str:
    """``value / baseline`` formatted as ``1.03x``."""
    return f"{value / baseline:.2f}x"
