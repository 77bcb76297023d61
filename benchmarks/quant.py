"""LoRA and int4 weights through ``use_implicit_args`` vs plain dense ``jax.jit``, same-run ratios.

Run: ``python benchmarks/quant.py [--processes 3 --load idle,busy --json out.json]`` (the
driver; ``--quick`` for a smoke test at W 512²). The driver runs the benchmark in
``--processes`` separate worker processes per load condition, interleaved (idle, busy, busy,
idle, ...): "idle" as the host is, "busy" with a background process spinning one core at
100% for the whole worker. It prints one markdown table, per measurement the median and the
min-max of the workers' values under each condition and the target (a median that misses it
is marked), with the command line, jax version, backend, int4 dot settings, CPU count and the
load averages before each worker.

``python benchmarks/quant.py --worker [--sizes 2048 4096 --rank 16 --batch 16 --runs 7 --steps 5]``
is one process (what each worker runs; ``--format json`` is what the driver reads). Rows:
LoRA forward vs ``x @ W`` and vs merging ``W + A B^T``; a LoRA training step (``w`` frozen)
vs the hand-written a/b-only step; int4 weight bytes per parameter (codes + scales),
compiled temp bytes vs the dense f32 weight, matvec (batch 1, one weight hot in the cache)
and batch matmul time vs f32 dense, a batch-1 decode step through a stack of weights too
large for the cache, trace + compile overhead vs plain jit. Every time is a median of
``--runs`` interleaved runs of ``--steps`` calls inside the worker.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import namax.quant as qax
from _timing import (BusyLoad, interleaved_first_calls, interleaved_medians, meets_target,  # the script's folder
                     spread)


class Value(str):
    """A row's printed value (``"0.42x"``) that also carries the exact number, its decimals and unit.

    >>> v = Value(0.4249); v, v.number, v.unit
    ('0.42x', 0.4249, 'x')
    """

    def __new__(cls, number: float, decimals: int = 2, unit: str = "x") -> "Value":
        self = super().__new__(cls, f"{number:.{decimals}f}{unit}")
        self.number, self.decimals, self.unit = float(number), decimals, unit
        return self


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
        (f"LoRA r={rank} W {d}², batch {batch}: forward / `x@W`", Value(t['lora'] / t['plain']), "<= 1.1"),
        (f"LoRA r={rank} W {d}², batch {batch}: forward / merged `W+AB^T`", Value(t['lora'] / t['merged']),
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
         Value(t['lora'] / t['hand']), "<= 1.05"),
        (f"LoRA r={rank} W {d}², batch {batch}: `jax.grad` with `train_w=True` / frozen `w`",
         Value(g['train_w'] / g['frozen']), "> 1 (the full-weight gradient dot)"),
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
                 Value(weight_args / d ** 2, 4, ""), "<= 0.53"))
    rows.append((f"int4 W {d}², batch {batch}: compiled temp / dense f32 weight",
                 Value(stats.temp_size_in_bytes / (4 * d ** 2), 3, ""), "< 0.5"))
    for n, x in xs.items():
        t = interleaved_medians({"dense": lambda x=x: dense(x, w), "int4": lambda x=x: quant(x, q)},
                                runs=runs, steps=steps)
        label = "matvec (batch 1)" if n == 1 else f"batch {n} matmul"
        rows.append((f"int4 W {d}², {label}: time / f32 dense", Value(t['int4'] / t['dense']), "<= 1.0"))
    first = interleaved_first_calls({
        "plain": lambda: jax.jit(lambda x, w: x @ w.materialize()).lower(xs[batch], q).compile(),
        "implicit": lambda: jax.jit(qax.use_implicit_args(lambda x, w: x @ w)).lower(xs[batch], q).compile(),
    }, runs=3)
    rows.append((f"int4 W {d}²: trace+compile, use_implicit_args / plain jit (same int4 input)",
                 Value(first['implicit'] / first['plain']), "-"))
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
             Value(t['int4'] / t['dense']), "<= 0.35")]


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



# --- one process ------------------------------------------------------------------------------

QUICK = {"sizes": [512], "runs": 3, "steps": 2, "decode_mib": 8}
FULL = {"sizes": [2048, 4096], "runs": 7, "steps": 5, "decode_mib": 128}


def int4_settings() -> dict[str, Any]:
    """The int4 dot's form in use and its module-level settings (whatever the module defines)."""
    out: dict[str, Any] = {}
    mod = getattr(qax, "int4_dot", None)
    if mod is None:
        return out
    form = getattr(mod, "form", None)
    if callable(form):
        try:
            out["form"] = form()
        except Exception as e:  # noqa: BLE001  (a setting being rewritten must not stop the benchmark)
            out["form"] = f"error: {e}"
    for key, value in sorted(vars(mod).items()):
        if key.isupper() and not key.startswith("_") and isinstance(value, (bool, int, float, str)):
            out[key] = value
    return out


def environment() -> dict[str, Any]:
    """jax version, backend, int4 dot settings, CPU count: the context the numbers belong to."""
    return {"jax": jax.__version__, "backend": jax.default_backend(), "devices": jax.device_count(),
            "int4_dot": int4_settings(), "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}


def describe(env: dict[str, Any]) -> str:
    """One line of ``environment()``."""
    int4 = ", ".join(f"{k}={v}" for k, v in env.get("int4_dot", {}).items())
    return (f"jax {env.get('jax')}, backend {env.get('backend')} ({env.get('devices')} devices), "
            f"int4 dot: {int4 or 'n/a'}, CPUs: {env.get('cpu_count')} ({env.get('cpus_usable')} usable)")


def measure(sizes: Sequence[int], rank: int, batch: int, runs: int, steps: int,
            decode_mib: int = 128) -> tuple[list[tuple[str, Value, str]], dict[int, str]]:
    """Every row at every size, once, in this process; and the fusion summary per size."""
    rows, fusions = [], {}
    for d in sizes:
        rows += lora_rows(d, rank, batch, runs, steps)
        rows += lora_train_rows(d, rank, batch, runs, steps)
        int4, fusions[d] = int4_rows(d, batch, runs, steps)
        rows += int4
        rows += decode_rows(d, max(2, decode_mib * 2 ** 20 // (4 * d * d)), runs, steps)
    return rows, fusions


def row_record(name: str, value: Any, target: str) -> dict[str, Any]:
    """A row as JSON: the exact number when ``value`` is a :class:`Value`, else parsed from its text."""
    number, decimals, unit = getattr(value, "number", None), getattr(value, "decimals", 2), getattr(value, "unit", "")
    if number is None:
        text = str(value)
        unit = "x" if text.endswith("x") else ""
        number = float(text[:-1] if unit else text)
        decimals = len(text.rstrip("x").partition(".")[2])
    return {"name": name, "text": str(value), "value": number, "decimals": decimals, "unit": unit, "target": target}


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Run every row once; print the table (``--format table``) or one line of JSON."""
    start, load_start = time.perf_counter(), os.getloadavg()
    rows, fusions = measure(args.sizes, args.rank, args.batch, args.runs, args.steps, args.decode_mib)
    result = {"rows": [row_record(*row) for row in rows], "fusions": {str(d): f for d, f in fusions.items()},
              "env": environment(), "pid": os.getpid(), "seconds": time.perf_counter() - start,
              "loadavg_start": load_start, "loadavg_end": os.getloadavg()}
    if args.format == "json":
        print(json.dumps(result), flush=True)
    else:
        print(describe(result["env"]) + "\n")
        print("| measurement | value | target |\n|---|---|---|")
        for name, value, target in rows:
            print(f"| {name} | {value} | {target} |")
        for d, text in fusions.items():
            print(f"\nfusions of the compiled int4 x@W, W {d}², batch {args.batch}:\n{text}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


# --- the driver: several processes, idle and busy ---------------------------------------------

LOADS = {"idle": 0, "busy": 1}  # condition -> cores kept busy by the background load


def schedule(processes: int, loads: Sequence[str]) -> list[tuple[int, str]]:
    """``(round, condition)`` of each worker: every round runs each condition once, alternately
    forwards and backwards (idle, busy, busy, idle, ...), so drift of the host hits both alike.

    >>> schedule(3, ["idle", "busy"])
    [(0, 'idle'), (0, 'busy'), (1, 'busy'), (1, 'idle'), (2, 'idle'), (2, 'busy')]
    """
    return [(i, c) for i in range(processes) for c in (loads if i % 2 == 0 else list(reversed(loads)))]


def worker_command(args: argparse.Namespace) -> list[str]:
    """The command line of one worker: this script with ``--worker --format json`` and the sizes."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--format", "json",
           "--sizes", *map(str, args.sizes), "--rank", str(args.rank), "--batch", str(args.batch),
           "--runs", str(args.runs), "--steps", str(args.steps), "--decode-mib", str(args.decode_mib)]
    return cmd + (["--quick"] if args.quick else [])


def parse_worker_output(stdout: str) -> dict[str, Any]:
    """The worker's result: the last stdout line that is a JSON object."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON result in the worker's output:\n" + stdout[-2000:])


def run_worker(cmd: Sequence[str], cores: int, timeout: float | None = None) -> dict[str, Any]:
    """One worker under a background load of ``cores`` spinning cores (started before, always
    stopped after); returns its result with the load averages before it and the load's real use."""
    loadavg = os.getloadavg()
    with BusyLoad(cores) as load:
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - start
        used = load.cores_used()
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed (exit {proc.returncode}): {shlex.join(cmd)}\n{proc.stderr[-4000:]}")
    result = parse_worker_output(proc.stdout)
    result.update(loadavg_before=list(loadavg), wall=wall, load_cores=cores, load_cores_used=used)
    return result


def aggregate(workers: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per measurement (in first-seen order): its format, target and values per condition.

    ``workers`` are worker results with a ``"condition"`` key.
    """
    table: dict[str, dict[str, Any]] = {}
    for w in workers:
        for row in w["rows"]:
            entry = table.setdefault(row["name"], {"name": row["name"], "target": row["target"],
                                                   "decimals": row["decimals"], "unit": row["unit"], "values": {}})
            entry["values"].setdefault(w["condition"], []).append(row["value"])
    return list(table.values())


def format_spread(values: Sequence[float], decimals: int = 2, unit: str = "x") -> str:
    """``0.42x (0.40-0.45)``: the median with its unit, then min-max; just the value if all agree.

    >>> format_spread([0.4, 0.45, 0.42]), format_spread([0.53, 0.53], 4, "")
    ('0.42x (0.40-0.45)', '0.5300')
    """
    if not values:
        return "-"
    med, lo, hi = spread(list(values))
    if f"{lo:.{decimals}f}" == f"{hi:.{decimals}f}":
        return f"{med:.{decimals}f}{unit}"
    return f"{med:.{decimals}f}{unit} ({lo:.{decimals}f}-{hi:.{decimals}f})"


def render_table(entries: Sequence[dict[str, Any]], conditions: Sequence[str]) -> str:
    """The markdown table: measurement | <condition> median (min-max) ... | target.

    A median that misses its target gets ``**miss**``.
    """
    lines = ["| measurement | " + " | ".join(f"{c} median (min-max)" for c in conditions) + " | target |",
             "|---|" + "---|" * len(conditions) + "---|"]
    for e in entries:
        cells = []
        for c in conditions:
            values = e["values"].get(c, [])
            cell = format_spread(values, e["decimals"], e["unit"])
            if values and meets_target(spread(values)[0], e["target"]) is False:
                cell += " **miss**"
            cells.append(cell)
        lines.append(f"| {e['name']} | " + " | ".join(cells) + f" | {e['target']} |")
    return "\n".join(lines)


def misses(entries: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(measurement, condition)`` of every median that misses its target."""
    return [(e["name"], c) for e in entries for c, v in e["values"].items()
            if v and meets_target(spread(v)[0], e["target"]) is False]


def idle_warning(results: Sequence[dict[str, Any]]) -> list[str]:
    """A warning line when the 1-min load average before an "idle" worker was >= half the CPUs.

    >>> idle_warning([{"condition": "idle", "loadavg_before": [3.0, 1, 1], "env": {"cpus_usable": 2}}])
    ['WARNING: the host was not idle: 1-min load average up to 3.00 before "idle" workers, 2 CPUs']
    """
    idle = [r for r in results if r.get("load_cores", 0) == 0 and r["condition"] == "idle"]
    if not idle:
        return []
    cpus = idle[0].get("env", {}).get("cpus_usable") or os.cpu_count() or 1
    worst = max(r["loadavg_before"][0] for r in idle)
    if worst < cpus / 2:
        return []
    return [f'WARNING: the host was not idle: 1-min load average up to {worst:.2f} before "idle" workers, {cpus} CPUs']


@contextlib.contextmanager
def _sigterm_raises():
    """Turn SIGTERM into SystemExit so that ``finally`` blocks (the busy load's cleanup) run."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def drive(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Run the workers interleaved, print the table, return (and optionally save) everything."""
    loads = args.load
    plan = schedule(args.processes, loads)
    cmd = worker_command(args)
    command = shlex.join(["python", "benchmarks/quant.py", *argv])
    print(f"command: {command}", flush=True)
    print(f"{len(plan)} workers ({args.processes} per condition, interleaved): {shlex.join(cmd[1:])}",
          file=sys.stderr, flush=True)
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    with _sigterm_raises():
        for k, (round_, condition) in enumerate(plan):
            result = run_worker(cmd, LOADS[condition], timeout=args.worker_timeout)
            result.update(condition=condition, round=round_)
            results.append(result)
            print(f"  worker {k + 1}/{len(plan)} {condition}: {result['wall']:.1f} s, load avg before "
                  f"{' '.join(f'{x:.2f}' for x in result['loadavg_before'])}", file=sys.stderr, flush=True)
    total = time.perf_counter() - start
    entries = aggregate(results)
    envs = [describe(r["env"]) for r in results]
    lines = [describe(results[0]["env"]) + (" (workers differ!)" if len(set(envs)) > 1 else ""),
             f"sizes {args.sizes}, LoRA rank {args.rank}, batch {args.batch}, {args.runs} runs x {args.steps} "
             f"steps per median, decode stack {args.decode_mib} MiB f32; {len(results)} worker processes, "
             f"{total:.0f} s in all; busy = {LOADS['busy']} extra process spinning one core",
             "load averages (1, 5, 15 min) before each worker: " + "; ".join(
                 f"{r['condition']} {' '.join(f'{x:.2f}' for x in r['loadavg_before'])}"
                 + (f" (load used {r['load_cores_used']:.2f} core)" if r["load_cores"] and r["load_cores_used"]
                    is not None else "") for r in results),
             *idle_warning(results), "", render_table(entries, loads)]
    grouped: dict[str, list[str]] = {}
    for name, condition in misses(entries):
        grouped.setdefault(name, []).append(condition)
    lines.append("\nmedians missing their target: " + ("; ".join(f"{n} ({', '.join(c)})" for n, c in grouped.items())
                                                         or "none"))
    print("\n".join(lines), flush=True)
    out = {"command": command, "args": {k: v for k, v in vars(args).items()}, "seconds": total,
           "workers": results, "summary": [{**e, "medians": {c: spread(v)[0] for c, v in e["values"].items()}}
                                           for e in entries]}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"\nraw results: {args.json}")
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help="run once in this process (what each worker does)")
    p.add_argument("--format", choices=["table", "json"], default="table", help="--worker output")
    p.add_argument("--processes", type=int, default=3, help="worker processes per load condition (>= 3)")
    p.add_argument("--load", default="idle,busy", help="conditions, comma-separated: idle, busy")
    p.add_argument("--json", metavar="PATH", help="save the raw results")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: defaults {QUICK}, fewer than 7 runs and 3 processes allowed")
    p.add_argument("--sizes", type=int, nargs="+")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--runs", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--decode-mib", type=int, help="size of the decode step's f32 weight stack (MiB)")
    p.add_argument("--worker-timeout", type=float, default=3600.0, help="seconds")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.runs < 7 and not args.quick:
        p.error(f"--runs must be >= 7 (medians of at least 7 runs), got {args.runs}")
    if args.processes < (1 if args.quick else 3):
        p.error(f"--processes must be >= 3 (a median and a spread over processes), got {args.processes}")
    args.load = [c.strip() for c in args.load.split(",") if c.strip()]
    unknown = [c for c in args.load if c not in LOADS]
    if unknown or not args.load or len(set(args.load)) != len(args.load):
        p.error(f"--load must be distinct conditions from {sorted(LOADS)}, got {args.load}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    return drive(args, argv)


if __name__ == "__main__":
    main()
