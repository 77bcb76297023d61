"""Does ``namax.plan``'s cost model rank mappings as the measured step times do? (GPT-2 train step)

Plans a named GPT-2 (``namax.models.gpt2``) SGD training step on a mesh of simulated CPU
devices, then compiles ``--max-compiles`` candidates (``--pick top``: the plan's table;
``spread``, the default: the plan's best and candidates spread evenly over the whole
estimate ranking, a harder test of the ordering than the near-ties at the top), runs each
(inputs placed by its mapping) and times it (medians of interleaved runs). Prints the plan's table with the measured times, and
the Spearman rank correlation of measured time with the predicted cost (and with the cheap
estimate that pruned the candidates).

    python benchmarks/plan.py [--devices 8 --mesh 4,2 --embed 128 --layers 2 --heads 4 --seq-len 128
        --batch-size 8 --vocab 1024 --max-compiles 12 --pick spread --runs 5 --steps 3]

On a CPU the simulated devices share the host's cores, so a mapping's measured time mixes
per-device work with the host's threading; the correlation says how well the cost model
orders mappings here, not on an accelerator.
"""

from __future__ import annotations

import argparse
import os
import sys


def _flags(argv) -> int:
    n = 8
    for i, a in enumerate(argv or []):
        if a == "--devices" and i + 1 < len(argv):
            n = int(argv[i + 1])
        elif a.startswith("--devices="):
            n = int(a.split("=", 1)[1])
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = (flags + f" --xla_force_host_platform_device_count={n}").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    return n


def spearman(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties).

    >>> round(spearman([1, 2, 3, 4], [10, 20, 30, 40]), 6), round(spearman([1, 2, 3], [3, 2, 1]), 6)
    (1.0, -1.0)
    """
    import numpy as np

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


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    _flags(argv)
    import equinox as eqx
    import jax
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import namax as nx
    from _timing import interleaved_medians
    from namax.models.gpt2 import GPT2Config, Gpt2LMHeadModel
    from namax.partitioning import auto_twin
    from namax.plan import mapping_text, place_inputs

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--mesh", default="4,2", help="mesh shape; axes are data[,model]")
    p.add_argument("--embed", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--max-compiles", type=int, default=12)
    p.add_argument("--memory-budget", type=int, default=None, help="bytes per device")
    p.add_argument("--pick", choices=("spread", "top"), default="spread",
                   help="time the plan's top candidates, or candidates spread over the estimate ranking")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args(argv)

    shape = tuple(int(s) for s in args.mesh.split(","))
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:int(np.prod(shape))]).reshape(shape),
                             ("data", "model")[:len(shape)])
    config = GPT2Config(vocab_size=args.vocab, n_positions=args.seq_len, n_embd=args.embed, n_layer=args.layers,
                        n_head=args.heads)
    model = eqx.filter_jit(Gpt2LMHeadModel.init)(config, key=jax.random.key(0))  # one compile, not one per op
    params, static = eqx.partition(model, eqx.is_array)
    ids = nx.named(jax.random.randint(jax.random.key(1), (args.batch_size, args.seq_len), 0, args.vocab),
                   (nx.Axis("batch", args.batch_size), config.Pos))

    def step(params, ids):
        def loss(params):
            logits = eqx.combine(params, static)(ids)
            return nx.mean(nx.nn.logsumexp(logits, "vocab") - nx.max(logits, "vocab")).array

        value, grads = jax.value_and_grad(loss)(params)
        return value, jax.tree_util.tree_map(lambda w, g: w - 1e-3 * g, params, grads)

    plan = nx.plan(step, params, ids, mesh=mesh, memory_budget=args.memory_budget, max_compiles=args.max_compiles,
                   keep_compiled=args.pick == "top")
    if args.pick == "spread":  # the plan's best, then candidates spread over the whole estimate ranking
        everything = [c.mapping for c in plan.table[:1]] + \
            [c.mapping for c in sorted(plan.table[1:] + plan.pruned, key=lambda c: c.estimate)]
        picks = sorted({round(i * (len(everything) - 1) / max(args.max_compiles - 1, 1))
                        for i in range(args.max_compiles)})
        plan = nx.plan(step, params, ids, mesh=mesh, memory_budget=args.memory_budget,
                       candidates=[everything[i] for i in picks], max_compiles=len(picks), keep_compiled=True)
    runnable = [c for c in plan.table if c.error is None]
    calls = {}
    for i, c in enumerate(runnable):
        placed = place_inputs(params, ids, mapping=c.mapping, mesh=auto_twin(mesh))  # plan compiles on it
        calls[str(i)] = (lambda compiled=c.executable, placed=placed: compiled(*placed))
    measured = interleaved_medians(calls, runs=args.runs, steps=args.steps)
    times = [measured[str(i)] for i in range(len(runnable))]
    rho = spearman([c.predicted_cost for c in runnable], times)
    rho_est = spearman([c.estimate for c in runnable], times)

    print(f"GPT-2 SGD step: vocab {args.vocab}, embed {args.embed}, layers {args.layers}, heads {args.heads}, "
          f"seq {args.seq_len}, batch {args.batch_size}; mesh {plan.mesh_shape}; planned in {plan.seconds:.1f} s "
          f"({len(plan.table)} compiled, {len(plan.pruned)} pruned)\n")
    print("| rank | mapping | predicted | estimate | measured step | memory / device | collectives |")
    print("|---|---|---|---|---|---|---|")
    for i, (c, t) in enumerate(zip(runnable, times), 1):
        coll = ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in c.collectives.items() if v) or "none"
        print(f"| {i} | {mapping_text(c.mapping)} | {c.predicted_cost * 1e3:.2f} ms | {c.estimate * 1e3:.2f} ms | "
              f"{t * 1e3:.2f} ms | {c.memory_per_device / 2 ** 20:.2f} MiB | {coll} |")
    best_measured = min(range(len(times)), key=times.__getitem__)
    print(f"\nSpearman(predicted cost, measured) = {rho:.2f}; Spearman(estimate, measured) = {rho_est:.2f}; "
          f"planned best is measured #{sorted(times).index(times[0]) + 1} of {len(times)} "
          f"(measured best: {mapping_text(runnable[best_measured].mapping)})")
    return {"spearman": rho, "spearman_estimate": rho_est, "times": times, "plan": plan}


if __name__ == "__main__":
    main()
