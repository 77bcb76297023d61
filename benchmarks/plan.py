"""Does ``namax.plan`` pick a mapping as fast as the hand-written ones, and rank mappings as measured?

Plans one training step on a mesh of simulated CPU devices, then compiles and times (medians
of interleaved runs, inputs placed by each mapping):

- the plan's pick;
- the hand-written mappings: data parallel (the batch over every mesh axis), FSDP (the same
  compute, parameters split along ``embed`` over every mesh axis), tensor parallel
  (Megatron: the batch over ``data``, heads and the MLP's hidden dim over ``model``) and
  FSDP+TP (TP with the parameters also split along ``embed`` over ``data``); on a mesh
  whose ``model`` axis has size 1, TP and FSDP+TP are DP and FSDP and are left out;
- more of the plan's candidates, spread evenly over its whole estimate ranking (at least
  ``--candidates`` mappings in all), for the rank correlation.

Mappings that compile to the very same program (the same HLO) are timed once and shown on
one row (``FSDP=plan``): timing one program twice only samples the host's noise. Each timed
run follows one untimed step of the same program, and the order rotates run by run, so no
candidate pays for the heavy one timed before it.

Programs (``--program``): ``block``, the named GPT block of ``benchmarks/namedjit.py``
(forward + backward, ``jax.value_and_grad``); ``hf-gpt2``, an unmodified transformers
``FlaxGPT2LMHeadModel`` (random weights, no download) whose parameters and token ids are
named by ``in_axes`` only (:func:`namax.hf.flax_gpt2_names`), the step its loss's value and
gradient. Prints the table (mapping | predicted cost | measured step | memory / device, the
pick marked), the planning time, the pick's measured time over the best hand-written one,
and the Spearman rank correlation of predicted cost with measured time. With
``--budget-below-replicated`` the plan gets a per-device memory budget that replicated
parameters cannot meet: halfway between the compiled memory of the data-parallel mapping
and of FSDP (the same compute, parameters split); the pick is checked against it.

    python benchmarks/plan.py [--program block|hf-gpt2] [--mesh 4,2|8,1] [--candidates 10]
        [--budget-below-replicated] [--measure K] [--calibrate] [--runs 7 --steps 3]

On a CPU the simulated devices share the host's cores, so the measured times rank mappings
by their total work and their collectives' host copies, not by an accelerator's.
"""

from __future__ import annotations

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import functools  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import namax as nx  # noqa: E402
from namax.partitioning import auto_twin  # noqa: E402
from namax.plan import Candidate, CostModel, clear_cache, time_candidates  # noqa: E402


def spearman(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties).

    >>> round(spearman([1, 2, 3, 4], [10, 20, 30, 40]), 6), round(spearman([1, 2, 3], [3, 2, 1]), 6)
    (1.0, -1.0)
    """
    def ranks(x):
        x = np.asarray(x, float)
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=float)
        for v in np.unique(x):  # ties: their average rank
            tie = x == v
            r[tie] = r[tie].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


# --- the programs ------------------------------------------------------------------------


def block_program(size: str):
    """The named GPT block of benchmarks/namedjit.py (``size="small"``: a tiny one for tests)."""
    import namedjit as block  # benchmarks/namedjit.py, next to this script

    sizes = {"batch": 8, "position": 16, "embed": 16, "head": 2, "key": 8, "mlp": 32} if size == "small" else {}
    Batch, Pos, Embed = (a.resize(sizes.get(a.name, a.size)) for a in (block.Batch, block.Pos, block.Embed))
    params = block.make_params(jax.random.key(0), sizes)
    x = nx.named(jax.random.normal(jax.random.key(1), (Batch.size, Pos.size, Embed.size)), (Batch, Pos, Embed))
    return jax.value_and_grad(block.named_block_loss), (params, x), None, {"head": "model", "mlp": "model"}


def hf_gpt2_program(size: str):
    """An unmodified transformers Flax GPT-2 train step, named by ``in_axes`` only."""
    import transformers
    from namax.hf import GPT2_MEGATRON, flax_gpt2_names

    layers, embed, heads, vocab, seq, batch = (2, 128, 4, 1024, 128, 8) if size == "full" else (1, 16, 2, 64, 16, 8)
    config = transformers.GPT2Config(n_layer=layers, n_embd=embed, n_head=heads, vocab_size=vocab, n_positions=seq)
    model = transformers.FlaxGPT2LMHeadModel(config, seed=0, _do_init=False)
    shapes = jax.eval_shape(functools.partial(model.init_weights, input_shape=(1, 1)), jax.random.key(0))
    rng = np.random.default_rng(0)

    def init(path, s):
        scale = getattr(path[-1], "key", None) == "scale"
        return np.asarray(1.0 + 0.1 * rng.standard_normal(s.shape) if scale else 0.02 * rng.standard_normal(s.shape),
                          s.dtype)

    params = jax.tree_util.tree_map_with_path(init, shapes)
    ids = np.random.default_rng(1).integers(0, vocab, (batch, seq), dtype=np.int32)

    def loss(params, ids):
        logits = model(ids, params=params).logits
        logp = jax.nn.log_softmax(logits[:, :-1])
        return -jnp.mean(jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1))

    in_axes = (flax_gpt2_names(params), ("batch", "position"))
    tp = {k: v for k, v in GPT2_MEGATRON.items() if k != "batch"}
    return jax.value_and_grad(loss), (params, ids), in_axes, tp


PROGRAMS = {"block": block_program, "hf-gpt2": hf_gpt2_program}


def hand_mappings(mesh_shape: dict, tp: dict) -> dict:
    """DP, FSDP, TP and FSDP+TP as ``(mapping, parameter mapping or None)`` on a data[,model] mesh."""
    real = tuple(a for a, k in mesh_shape.items() if k > 1)
    every = real[0] if len(real) == 1 else real
    out = {"DP": ({"batch": every}, None),
           "FSDP": ({"batch": every}, {"batch": every, "embed": every})}
    if mesh_shape.get("model", 1) > 1:
        mapping = {"batch": "data", **tp}
        out["TP"] = (mapping, None)
        out["FSDP+TP"] = (mapping, {**mapping, "embed": "data"})
    return out


# --- measuring ---------------------------------------------------------------------------


def program_text(compiled) -> str:
    """The compiled HLO without its module name line (two mappings that compile to the same
    program differ only there, if at all)."""
    return re.sub(r"^HloModule \S+", "HloModule", compiled.as_text(), count=1)


def same_programs(cands: list, labels: dict, key) -> tuple[list, dict]:
    """Candidates whose mappings compile to the very same program, timed once: the first of
    each group is kept and its label (in ``labels``, by ``key``) joins the others' with
    ``=``; returns the kept candidates and, by kept key, the mapping texts folded into it.
    Timing one program twice would only measure the host's noise between two samples."""
    kept: dict = {}
    same: dict = {}
    for c in cands:
        text = program_text(c.executable)
        if text in kept:
            first = kept[text]
            joined = "=".join(x for x in (labels[key(first)], labels[key(c)]) if x)
            labels[key(first)] = joined
            same.setdefault(key(first), []).append(c.text)
        else:
            kept[text] = c
    return list(kept.values()), same


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--program", choices=sorted(PROGRAMS), default="block")
    p.add_argument("--size", choices=("full", "small"), default="full", help="small: a tiny program (tests)")
    p.add_argument("--mesh", default="4,2", help="mesh shape; its axes are data[,model]")
    p.add_argument("--candidates", type=int, default=10, help="mappings timed in all (plan's pick + hand + spread)")
    p.add_argument("--max-compiles", type=int, default=12, help="the plan's max_compiles")
    p.add_argument("--budget-below-replicated", action="store_true",
                   help="plan within a memory budget that replicated parameters cannot meet")
    p.add_argument("--measure", type=int, default=0,
                   help="the plan's measure= (time its best K compiled candidates and pick the fastest)")
    p.add_argument("--calibrate", action="store_true",
                   help="plan with CostModel.calibrate(mesh) (this host's constants timed on the mesh) "
                        "instead of the default constants")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args(argv)

    shape = tuple(int(s) for s in args.mesh.split(","))
    if len(shape) == 1:
        shape = shape + (1,)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:int(np.prod(shape))]).reshape(shape), ("data", "model"))
    mesh_shape = dict(zip(mesh.axis_names, mesh.axis_sizes))
    step, step_args, in_axes, tp = PROGRAMS[args.program](args.size)
    hand = hand_mappings(mesh_shape, tp)

    budget = None
    if args.budget_below_replicated:
        both = nx.plan(step, *step_args, mesh=mesh, in_axes=in_axes, candidates=[hand["DP"][0], hand["FSDP"]],
                       parameters=0)
        dp, fsdp = sorted(c.memory_per_device for c in both.table)[::-1]
        if not fsdp < dp:
            raise SystemExit(f"FSDP needs {fsdp} bytes per device, DP {dp}: no budget rules out replication here")
        budget = (dp + fsdp) // 2
    model, calibration = None, ""
    if args.calibrate:
        start = time.perf_counter()
        model = CostModel.calibrate(mesh)
        calibration = (f"; cost model calibrated in {time.perf_counter() - start:.1f} s: "
                       f"{model.peak_flops:.3g} FLOP/s, {model.mem_bw:.3g} B/s, link {model.link_bw:.3g} B/s, "
                       f"{model.collective_latency * 1e6:.0f} us per collective")
    clear_cache()
    start = time.perf_counter()
    plan = nx.plan(step, *step_args, mesh=mesh, in_axes=in_axes, memory_budget=budget,
                   max_compiles=args.max_compiles, parameters=0, keep_compiled=True,
                   measure=args.measure, cost_model=model)
    planning = time.perf_counter() - start
    start = time.perf_counter()
    again = nx.plan(step, *step_args, mesh=mesh, in_axes=in_axes, memory_budget=budget,
                    max_compiles=args.max_compiles, parameters=0, keep_compiled=True,
                    measure=args.measure, cost_model=model)
    cached = time.perf_counter() - start
    assert again is plan

    # what to time: the pick, the hand-written mappings, candidates spread over the estimate ranking
    def key(c):
        return (tuple(sorted(c.mapping.items())), tuple(sorted((c.parameter_mapping or {}).items())))

    entries = [("plan", (plan.best.mapping, plan.best.parameter_mapping))]
    entries += [(name, m) for name, m in hand.items()]
    everything = sorted(plan.table[1:] + plan.pruned, key=lambda c: c.estimate)
    want = max(args.candidates - len(entries), 0)
    picks = sorted({round(i * (len(everything) - 1) / max(want - 1, 1)) for i in range(want)}) if everything else []
    entries += [("", (everything[i].mapping, everything[i].parameter_mapping)) for i in picks]
    seen, unique = set(), []
    for label, (m, pm) in entries:
        k = key(Candidate(m, pm))
        if k in seen:
            for i, (lab, mm) in enumerate(unique):
                if key(Candidate(*mm)) == k and label:
                    unique[i] = (f"{lab}={label}" if lab else label, mm)
            continue
        seen.add(k)
        unique.append((label, (m, pm)))
    # the plan's own compiled candidates are reused; the rest compiled without the budget (so
    # hand-written mappings over it are measured too)
    compiled = {key(c): c for c in plan.table if c.error is None}
    rest = [(m, pm) if pm is not None else m for _, (m, pm) in unique if key(Candidate(m, pm)) not in compiled]
    if rest:
        timed = nx.plan(step, *step_args, mesh=mesh, in_axes=in_axes, max_compiles=len(rest), keep_compiled=True,
                        parameters=0, candidates=rest, cost_model=model)
        compiled.update({key(c): c for c in timed.table if c.error is None})
    labels = {key(Candidate(*mm)): lab for lab, mm in unique}
    runnable = [compiled[key(Candidate(*mm))] for _, mm in unique if key(Candidate(*mm)) in compiled]
    runnable, same = same_programs(runnable, labels, key)
    times = time_candidates(runnable, *step_args, mesh=auto_twin(mesh), in_axes=in_axes, parameters=0,
                            runs=args.runs, steps=args.steps)
    rho = spearman([c.predicted_cost for c in runnable], times)
    by_label = {labels[key(c)]: t for c, t in zip(runnable, times)}
    pick_time = next(t for c, t in zip(runnable, times) if "plan" in labels[key(c)].split("="))
    memory = {name: c.memory_per_device for c in runnable for name in labels[key(c)].split("=") if name in hand}
    hand_times = {name: t for lab, t in by_label.items() for name in lab.split("=")
                  if name in hand and (budget is None or memory[name] <= budget)}  # under a budget: those in it
    best_hand = min(hand_times, key=hand_times.get)

    print(f"{args.program} ({args.size}) train step on mesh {mesh_shape}; planned in {planning:.1f} s "
          f"({len(plan.table)} compiled, {len(plan.pruned)} pruned; cached: {cached * 1e3:.0f} ms)"
          + ("" if budget is None else f"; memory budget {budget / 2 ** 20:.2f} MiB per device") + calibration + "\n")
    print("| mapping | label | predicted cost | measured step | memory / device | FLOPs | bytes | collectives |")
    print("|---|---|---|---|---|---|---|---|")
    for c, t in sorted(zip(runnable, times), key=lambda ct: ct[1]):
        label = labels[key(c)]
        mark = "**" if "plan" in label.split("=") else ""
        text = " = ".join([c.text] + same.get(key(c), []))
        print(f"| {mark}{text}{mark} | {label or '-'} | {c.predicted_cost * 1e3:.2f} ms | {t * 1e3:.2f} ms | "
              f"{c.memory_per_device / 2 ** 20:.2f} MiB | {c.flops:.3g} | {c.bytes_accessed:.3g} | "
              f"{c.collective_ops} ops, {c.collective_total / 2 ** 20:.2f} MiB |")
    ratio = pick_time / hand_times[best_hand]
    fits = budget is None or plan.best.memory_per_device <= budget
    within = "" if budget is None else " within the budget"
    print(f"\nplan's pick / best hand-written{within} ({best_hand}): {ratio:.3f}; Spearman(predicted, measured) = {rho:.2f} "
          f"over {len(runnable)} mappings; pick fits the budget: {fits}")
    return {"spearman": rho, "rows": [(c, t) for c, t in zip(runnable, times)], "ratio": ratio, "times": times, "plan": plan, "planning_seconds": planning,
            "best_hand": best_hand, "fits": fits, "budget": budget, "count": len(runnable)}


if __name__ == "__main__":
    main()
