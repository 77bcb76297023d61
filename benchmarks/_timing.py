"""Shared timing helpers for the benchmarks: medians of interleaved runs, same-run ratios.

Every number a benchmark prints is a ratio against plain ``jax.jit`` measured in the same
process, with the candidates' runs interleaved so that drift of the shared host hits both.
"""

from __future__ import annotations

import collections
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Mapping

import jax

from namax.timing import block, interleaved_medians  # noqa: F401  (re-exported for the benchmarks)


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


# --- several processes, idle and busy host -------------------------------------------------

_SPIN = (
    "import os\n"
    "parent = os.getppid()\n"
    "while os.getppid() == parent:  # stop by itself if the benchmark dies without cleaning up\n"
    "    for _ in range(1_000_000):\n"
    "        pass\n"
)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (Linux ``/proc``), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class BusyLoad:
    """Processes that each keep one core 100% busy with a pure-Python spin loop.

    Use as a context manager: the spinners start on entry and are always stopped on exit
    (also on an exception or Ctrl-C); a spinner whose parent dies exits by itself.
    ``cores=0`` is a no-op load (the idle condition).
    """

    def __init__(self, cores: int = 1, settle: float = 0.2):
        if cores < 0:
            raise ValueError(f"cores must be >= 0, got {cores}")
        self.cores, self.settle = cores, settle
        self.procs: list[subprocess.Popen] = []
        self.started = 0.0

    def start(self) -> "BusyLoad":
        self.started = time.perf_counter()
        try:
            for _ in range(self.cores):
                self.procs.append(subprocess.Popen([sys.executable, "-c", _SPIN], stdin=subprocess.DEVNULL,
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        except BaseException:
            self.stop()
            raise
        if self.procs and self.settle:
            time.sleep(self.settle)
        return self

    def cores_used(self) -> float | None:
        """CPU seconds the spinners used so far over the wall seconds since start (~``cores``)."""
        if not self.procs:
            return 0.0
        seconds = [_cpu_seconds(p.pid) for p in self.procs]
        wall = time.perf_counter() - self.started
        if any(s is None for s in seconds) or wall <= 0:
            return None
        return sum(seconds) / wall

    def alive(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        procs, self.procs = self.procs, []
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def __enter__(self) -> "BusyLoad":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def spread(values: list[float]) -> tuple[float, float, float]:
    """``(median, min, max)`` of one measurement over several processes.

    >>> spread([0.5, 0.4, 0.45])
    (0.45, 0.4, 0.5)
    """
    if not values:
        raise ValueError("spread of no values")
    return statistics.median(values), min(values), max(values)


_TARGET = re.compile(r"^\s*(<=|>=|<|>|≤|≥)\s*(-?\d+(?:\.\d+)?)")


def meets_target(value: float, target: str) -> bool | None:
    """Whether ``value`` meets a target written like ``"<= 1.05"``, ``"< 0.5"`` or ``"> 1 (why)"``.

    None when the target is not such a comparison (``"-"``, ``"well below 1"``).

    >>> meets_target(0.3, "<= 0.35"), meets_target(0.5, "< 0.5"), meets_target(2.0, "> 1 (x)"), meets_target(1, "-")
    (True, False, True, None)
    """
    match = _TARGET.match(target)
    if not match:
        return None
    op, bound = match.group(1), float(match.group(2))
    return {"<=": value <= bound, "≤": value <= bound, "<": value < bound, ">=": value >= bound,
            "≥": value >= bound, ">": value > bound}[op]
