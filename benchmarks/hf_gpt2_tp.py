"""Megatron-style tensor parallelism of an unmodified transformers GPT-2: namedjit vs hand-placed jax.jit.

Run: ``python benchmarks/hf_gpt2_tp.py`` (``--layers``, ``--embed``, ``--runs``, ``--steps``).
Runs on 8 simulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``,
set here unless XLA_FLAGS already asks for a device count), a 4x2 ("data", "model") mesh.

The model is transformers' ``FlaxGPT2LMHeadModel`` with random weights (no download); the
step is ``jax.value_and_grad`` of the mean next-token cross-entropy w.r.t. the parameters.
Two programs of that one step:

- namedjit: the parameters and token ids are named with ``in_axes`` (by parameter path,
  ``("batch", "position")`` for the ids) and the axis mapping
  ``{"batch": "data", "heads": "model", "mlp": "model", "qkv": "model"}`` places every
  named value: namax's names pass solves the names of every intermediate and the sharding
  pass constrains each one.
- hand: ``jax.jit`` with ``in_shardings``/``out_shardings`` written per parameter (c_attn
  and c_fc column-parallel, both c_proj row-parallel, the rest replicated, the batch over
  "data"); XLA's sharding propagation places everything in between.

Both get the same committed inputs (``jax.device_put`` with the hand shardings). Prints a
markdown table of same-run ratios (namedjit / hand): step time (median of interleaved
runs), trace+lower time (median of interleaved cold runs, ``.trace(...).lower()`` of a
fresh function after ``jax.clear_caches()``: what a first call does before compiling),
the collectives of both compiled programs by kind, whether the two compiled modules have
the same instructions, and the largest difference of loss and gradients. A second
``jax.jit`` of the hand step runs in the same interleaved runs as a control: its ratio to
the first is the host's noise floor. Besides the ratio of the medians, the table gives
the median of the per-run ratios (candidates timed back to back pair up, which cancels
drift of a shared host's speed between runs). ``--dump DIR`` writes both compiled modules.
"""

from __future__ import annotations

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import argparse  # noqa: E402
import functools  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable, Mapping  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P  # noqa: E402

import namax as nx  # noqa: E402
from namax.hf import GPT2_MEGATRON, flax_gpt2_names  # noqa: E402

AXIS_RESOURCES = GPT2_MEGATRON
COLLECTIVE = re.compile(r"\s(all-gather|reduce-scatter|all-reduce|all-to-all|collective-permute)(?:-start)?\(")
KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")


# --- the model, its parameter names and the hand placement ------------------------------


def _keys(path: tuple) -> list:
    return [getattr(k, "key", None) for k in path]


def hand_spec(path: tuple, leaf: Any) -> P:
    """Megatron placement written by hand: c_attn/c_fc column-parallel (their ``out`` dim,
    dim 0 of the ``(out, in)`` kernel, and their bias over "model"), both c_proj
    row-parallel (dim 1, the ``in`` dim, over "model"; bias replicated), the rest replicated."""
    keys = _keys(path)
    module, kind = keys[-2], keys[-1]
    if module in ("c_attn", "c_fc"):
        return P("model", None) if kind == "kernel" else P("model")
    if module == "c_proj" and kind == "kernel":
        return P(None, "model")
    return P()


def build(layers: int, embed: int, heads: int, vocab: int, seq: int, batch: int):
    """``(model, params, ids)``: random weights from numpy on the shapes the model's init
    gives (its jitted random init alone takes seconds on CPU), random token ids."""
    import transformers

    config = transformers.GPT2Config(n_layer=layers, n_embd=embed, n_head=heads, vocab_size=vocab, n_positions=seq)
    model = transformers.FlaxGPT2LMHeadModel(config, seed=0, _do_init=False)
    shapes = jax.eval_shape(functools.partial(model.init_weights, input_shape=(1, 1)), jax.random.key(0))
    rng = np.random.default_rng(0)

    def init(path, s):
        kind = _keys(path)[-1]
        value = 1.0 + 0.1 * rng.standard_normal(s.shape) if kind == "scale" else 0.02 * rng.standard_normal(s.shape)
        return np.asarray(value, s.dtype)

    params = jax.tree_util.tree_map_with_path(init, shapes)
    ids = np.random.default_rng(1).integers(0, vocab, (batch, seq), dtype=np.int32)
    return model, params, ids


def make_loss(model) -> Callable:
    def loss(params, ids):
        logits = model(ids, params=params).logits
        logp = jax.nn.log_softmax(logits[:, :-1])
        return -jnp.mean(jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1))

    return loss


# --- measuring ----------------------------------------------------------------------------


def interleaved_samples(calls: Mapping[str, Callable[[], Any]], runs: int, steps: int,
                        warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per call of each zero-argument callable, one sample per run.

    Each run times ``steps`` back-to-back calls and blocks once at the end; the candidates
    take turns run by run, in reversed order every other run (so neither always follows
    the same neighbour).
    """
    for fn in calls.values():
        for _ in range(warmup):
            jax.block_until_ready(fn())
    samples: dict[str, list[float]] = {k: [] for k in calls}
    order = list(calls)
    for run in range(runs):
        for k in (order if run % 2 == 0 else order[::-1]):
            fn = calls[k]
            start = time.perf_counter()
            out = None
            for _ in range(steps):
                out = fn()
            jax.block_until_ready(out)
            samples[k].append((time.perf_counter() - start) / steps)
    return samples


def interleaved_cold(makers: Mapping[str, Callable[[], Any]], runs: int) -> dict:
    """Median seconds of one cold run of each maker (JAX's caches cleared before each; the
    order reversed every other run)."""
    samples: dict[str, list[float]] = {k: [] for k in makers}
    order = list(makers)
    for run in range(runs):
        for k in (order if run % 2 == 0 else order[::-1]):
            make = makers[k]
            jax.clear_caches()
            start = time.perf_counter()
            make()
            samples[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in samples.items()}


def paired_quartiles(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Quartiles of the per-run ratios ``a[i] / b[i]``: runs taken back to back pair up, so
    a drift of the host's speed between runs cancels out of each ratio."""
    q = statistics.quantiles([x / y for x, y in zip(a, b)], n=4, method="inclusive")
    return q[0], q[1], q[2]


def collective_counts(hlo_text: str) -> dict[str, int]:
    counts = {k: 0 for k in KINDS}
    for line in hlo_text.splitlines():
        m = COLLECTIVE.search(line)
        if m:
            counts[m.group(1)] += 1
    return counts


_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%\S+\s*=")


def normalized_instructions(hlo_text: str) -> list[str]:
    """The module's instructions, sorted, with value names, metadata and frontend attributes
    removed: two programs that differ only in naming and debug information give equal lists."""
    out = []
    for line in hlo_text.splitlines():
        if _INSTRUCTION.match(line):
            line = re.sub(r", (metadata|frontend_attributes)=\{[^}]*\}", "", line)
            out.append(re.sub(r"%[\w.\-]+", "%", line).strip())
    return sorted(out)


def max_abs_diff(a: Any, b: Any) -> float:
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb, (ta, tb)
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) for x, y in zip(la, lb))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--embed", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--runs", type=int, default=25, help="interleaved timing runs (median)")
    ap.add_argument("--steps", type=int, default=3, help="steps per timing run")
    ap.add_argument("--lower-runs", type=int, default=5, help="interleaved cold trace+lower runs (median)")
    ap.add_argument("--dump", metavar="DIR", help="write both compiled HLO modules to DIR")
    args = ap.parse_args()
    if jax.device_count() < 8:
        raise SystemExit(f"needs 8 devices, found {jax.device_count()} (XLA_FLAGS={os.environ.get('XLA_FLAGS')!r})")

    model, host_params, host_ids = build(args.layers, args.embed, args.heads, args.vocab, args.seq, args.batch)
    loss = make_loss(model)
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    names = flax_gpt2_names(host_params)
    in_axes = (names, ("batch", "position"))
    param_shardings = jax.tree_util.tree_map_with_path(lambda p, x: NamedSharding(mesh, hand_spec(p, x)), host_params)
    ids_sharding = NamedSharding(mesh, P("data", None))
    replicated = NamedSharding(mesh, P())
    params = jax.device_put(host_params, param_shardings)
    ids = jax.device_put(host_ids, ids_sharding)

    def make_named():
        return nx.namedjit(jax.value_and_grad(loss), in_axes=in_axes, axis_resources=AXIS_RESOURCES, mesh=mesh)

    def make_hand():
        return jax.jit(jax.value_and_grad(loss), in_shardings=(param_shardings, ids_sharding),
                       out_shardings=(replicated, param_shardings))

    named_fn, hand_fn = make_named(), make_hand()
    named_out = jax.block_until_ready(named_fn(params, ids))
    hand_out = jax.block_until_ready(hand_fn(params, ids))
    loss_diff = abs(float(named_out[0]) - float(hand_out[0]))
    grad_diff = max_abs_diff(named_out[1], hand_out[1])
    out_specs_differ = [jax.tree_util.keystr(p) for (p, a), b in zip(
        jax.tree_util.tree_leaves_with_path(named_out[1]), jax.tree_util.tree_leaves(hand_out[1]))
        if not a.sharding.is_equivalent_to(b.sharding, a.ndim)]

    named_hlo = named_fn.lower(params, ids).compile().as_text()
    hand_hlo = hand_fn.lower(params, ids).compile().as_text()
    if args.dump:
        os.makedirs(args.dump, exist_ok=True)
        for what, text in (("namedjit", named_hlo), ("hand", hand_hlo)):
            with open(os.path.join(args.dump, f"{what}.hlo.txt"), "w") as f:
                f.write(text)

    # "hand again": a second jax.jit of the same step (same executable), timed as a third
    # candidate: its ratio to "hand" is this host's noise floor for the step ratio
    load_before = os.getloadavg()[0]
    hand_again = make_hand()
    jax.block_until_ready(hand_again(params, ids))
    samples = interleaved_samples({"named": lambda: named_fn(params, ids), "hand": lambda: hand_fn(params, ids),
                                   "again": lambda: hand_again(params, ids)}, runs=args.runs, steps=args.steps)
    t = {k: statistics.median(v) for k, v in samples.items()}
    lower = interleaved_cold({"named": lambda: make_named().trace(params, ids).lower(),
                              "hand": lambda: make_hand().trace(params, ids).lower()}, runs=args.lower_runs)
    cn, ch = collective_counts(named_hlo), collective_counts(hand_hlo)

    n_params = sum(x.size for x in jax.tree_util.tree_leaves(host_params))
    print(f"HF FlaxGPT2LMHeadModel fwd+bwd, {args.layers} layers, embed {args.embed}, {args.heads} heads, "
          f"vocab {args.vocab}, seq {args.seq}, batch {args.batch} ({n_params / 1e6:.2f}M params); mesh 4x2 "
          f"(data, model) of {jax.device_count()} {jax.devices()[0].platform} devices; jax {jax.__version__}; "
          f"medians of {args.runs} interleaved runs x {args.steps} steps, trace+lower of {args.lower_runs}")
    print(f"namedjit axis_resources={AXIS_RESOURCES}; host load average before/after timing: "
          f"{load_before:.1f}/{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print()
    print("| measure | namedjit | hand-placed jax.jit | namedjit / hand (counts: difference) |")
    print("|---|---|---|---|")
    print(f"| step time fwd+bwd (ms) | {t['named'] * 1e3:.1f} | {t['hand'] * 1e3:.1f} | {t['named'] / t['hand']:.3f} |")
    for label, other in (("namedjit / hand", "named"), ("control: hand-placed jitted again / hand", "again")):
        q = paired_quartiles(samples[other], samples["hand"])
        print(f"| step time, {label}: median of per-run ratios [quartiles] | | | {q[1]:.3f} [{q[0]:.3f}, {q[2]:.3f}] |")
    print(f"| trace+lower (ms) | {lower['named'] * 1e3:.0f} | {lower['hand'] * 1e3:.0f} | "
          f"{lower['named'] / lower['hand']:.2f} |")
    for k in KINDS:
        print(f"| {k} in compiled HLO | {cn[k]} | {ch[k]} | {cn[k] - ch[k]:+d} |")
    total_n, total_h = sum(cn.values()), sum(ch.values())
    print(f"| collectives, total | {total_n} | {total_h} | {total_n - total_h:+d} |")
    same = normalized_instructions(named_hlo) == normalized_instructions(hand_hlo)
    print(f"| compiled HLO instructions | {len(normalized_instructions(named_hlo))} | "
          f"{len(normalized_instructions(hand_hlo))} | {'identical' if same else 'differ'} (names, metadata removed) |")
    print(f"| max abs diff, loss | {loss_diff:.2g} | | |")
    print(f"| max abs diff, gradients | {grad_diff:.2g} | | |")
    if out_specs_differ:
        print(f"\ngradients placed differently from the hand shardings: {out_specs_differ}")


if __name__ == "__main__":
    main()
