"""Train the named GPT (``examples/gpt.py``) on Shakespeare, byte by byte.

    python examples/train_lm.py                      # ~2 min on 2 CPU cores: loss ~5.5 -> < 2.5 nats/byte
    python examples/train_lm.py --devices 8 --fsdp   # 8 simulated CPU devices, parameters sharded over "data"
    python examples/train_lm.py --devices 8 --tp 2   # 4-way data x 2-way tensor parallel ("heads", "mlp")
    python examples/train_lm.py --sample "ROMEO:"    # sample from the newest checkpoint (KV cache)
    python examples/train_lm.py --lora               # LoRA fine-tune of the newest checkpoint
    python examples/train_lm.py --int4 --sample "ROMEO:"   # int4-quantised weights

Two processes through ``jax.distributed`` (gloo CPU collectives over loopback), 4 devices
each, train like one process with ``--devices 8``: process 0 logs and writes checkpoints,
each process loads only its rows of every batch. (Same losses up to float rounding: gloo
sums the gradients across processes in another order than one process's all-reduce.)

    python examples/train_lm.py --devices 4 --coordinator 127.0.0.1:12355 --num-processes 2 --process-id 0 &
    python examples/train_lm.py --devices 4 --coordinator 127.0.0.1:12355 --num-processes 2 --process-id 1

The training step runs under ``namedjit`` with an axis mapping (``{"batch": "data"}`` by
default): the names of the parameters and activations decide every sharding. Batches and
learning rates depend only on the step number and the optimizer state is checkpointed, so
``--resume`` continues with bitwise the same losses as an uninterrupted run.

Checkpoints are ``namax.checkpoint`` files: written atomically (temporary file, fsync,
rename), every tensor checksummed, the run's settings stored. ``--resume`` skips a damaged
newest checkpoint (one ``skipping PATH: why`` line on stderr) for the previous good one, and
refuses to continue a run with other settings unless ``--allow-config-change`` names them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Any, Callable, Optional, Sequence


@dataclasses.dataclass
class TrainOptions:
    """Everything one run needs; the command-line flags mirror these fields."""

    steps: int = 300
    batch_size: int = 16
    seq_len: int = 128
    embed: int = 128
    heads: int = 4
    layers: int = 4
    learning_rate: float = 3e-3
    warmup: int = 30
    weight_decay: float = 0.1
    seed: int = 0
    init_from_hf: Optional[str] = None
    eval_every: int = 100
    log_every: int = 0
    eval_batches: int = 4
    checkpoint_dir: str = "checkpoints/gpt"
    checkpoint_every: int = 100
    resume: bool = False
    keep_checkpoints: int = 3
    allow_config_change: tuple[str, ...] = ()
    stop_at: Optional[int] = None
    devices: Optional[int] = None
    fsdp: bool = False
    tp: int = 1
    coordinator: Optional[str] = None
    num_processes: int = 1
    process_id: int = 0
    progress: bool = True
    sample: Optional[str] = None
    sample_after: str = "ROMEO:"
    sample_tokens: int = 200
    temperature: float = 0.8
    lora: bool = False
    lora_rank: int = 8
    lora_steps: int = 100
    int4: bool = False


# The run's configuration: every option below is stored in each checkpoint and compared on
# --resume, where a difference is an error naming each option (old -> new) unless
# --allow-config-change lists it. Options that only say where to write, or what to do
# instead of training, are not stored:
CONFIG_NOT_STORED = ("checkpoint_dir", "resume", "allow_config_change", "coordinator", "process_id", "sample",
                     "sample_after", "sample_tokens", "temperature", "lora", "lora_rank", "lora_steps", "int4")
# Stored but free to change on --resume: they do not change what the run computes (the
# device layout only changes float rounding). So the compared options are the schedule, the
# model shape, the optimiser and the seed: steps, batch_size, seq_len, embed, heads, layers,
# learning_rate, warmup, weight_decay, seed.
CONFIG_MAY_CHANGE = frozenset({"eval_every", "log_every", "eval_batches", "checkpoint_every", "keep_checkpoints",
                               "stop_at", "progress", "devices", "fsdp", "tp", "num_processes"})


def run_config(opts: TrainOptions) -> dict[str, Any]:
    """The configuration stored in each checkpoint (see ``CONFIG_NOT_STORED``)."""
    return {k: v for k, v in dataclasses.asdict(opts).items() if k not in CONFIG_NOT_STORED}


def parse_args(argv: Optional[Sequence[str]] = None) -> TrainOptions:
    """``TrainOptions`` from command-line flags (``--help`` lists them)."""
    d = TrainOptions()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    g = p.add_argument_group("model and optimisation")
    g.add_argument("--steps", type=int, default=d.steps, help="training steps (default %(default)s)")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="sequences per step (global)")
    g.add_argument("--seq-len", type=int, default=d.seq_len, help="bytes per sequence")
    g.add_argument("--embed", type=int, default=d.embed, help="model width")
    g.add_argument("--heads", type=int, default=d.heads, help="attention heads")
    g.add_argument("--layers", type=int, default=d.layers, help="transformer blocks")
    g.add_argument("--learning-rate", type=float, default=d.learning_rate, help="peak AdamW learning rate")
    g.add_argument("--warmup", type=int, default=d.warmup, help="linear warm-up steps, then cosine decay")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay (matrices only)")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of the initial weights and the data order")
    g.add_argument("--init-from-hf", metavar="DIR", default=d.init_from_hf,
                   help="start from a transformers GPT-2 folder (config.json + safetensors, save_pretrained); "
                        "its n_embd, n_head and n_layer replace --embed, --heads and --layers")
    g = p.add_argument_group("evaluation and checkpoints")
    g.add_argument("--eval-every", type=int, default=d.eval_every, help="held-out loss every N steps")
    g.add_argument("--log-every", type=int, default=d.log_every, help="print the training loss (full precision) "
                   "every N steps (0: never)")
    g.add_argument("--eval-batches", type=int, default=d.eval_batches, help="held-out batches per evaluation")
    g.add_argument("--checkpoint-dir", default=d.checkpoint_dir, help="where step_N.safetensors files go")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="save every N steps (0: never)")
    g.add_argument("--resume", action="store_true", help="continue from the newest usable checkpoint in "
                   "--checkpoint-dir (damaged ones are reported and skipped; the run's settings must match)")
    g.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints, metavar="N",
                   help="keep the N newest checkpoints, deleting older ones once a new one is on disk "
                        "(default %(default)s; 0: keep all)")
    g.add_argument("--allow-config-change", default="", metavar="OPTION,...",
                   help="--resume even though these options differ from the checkpoint's (e.g. steps,learning-rate); "
                        "logging, evaluation, checkpoint and device options may always differ")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    g = p.add_argument_group("devices and sharding")
    g.add_argument("--devices", type=int, default=d.devices, help="simulated CPU devices per process "
                   "(sets XLA_FLAGS before jax is imported)")
    g.add_argument("--fsdp", action="store_true", help="shard parameters and optimizer state over 'data' by 'embed'")
    g.add_argument("--tp", type=int, default=d.tp, help="tensor-parallel degree: 'heads' and 'mlp' over 'model'")
    g.add_argument("--coordinator", default=d.coordinator, help="HOST:PORT of process 0 (multi-process runs)")
    g.add_argument("--num-processes", type=int, default=d.num_processes, help="processes in the run")
    g.add_argument("--process-id", type=int, default=d.process_id, help="this process's index")
    g = p.add_argument_group("sampling, LoRA and int4 (use the newest checkpoint)")
    g.add_argument("--sample", metavar="PROMPT", default=d.sample, help="generate text after PROMPT instead of training")
    g.add_argument("--stop-at", type=int, default=d.stop_at, metavar="STEP",
                   help="stop (and checkpoint) after STEP steps of the --steps schedule, as a preemption would; "
                        "--resume continues it")
    g.add_argument("--sample-after", metavar="PROMPT", default=d.sample_after,
                   help="after training, sample from the newest checkpoint after PROMPT ('' for none)")
    g.add_argument("--sample-tokens", type=int, default=d.sample_tokens, help="bytes to generate")
    g.add_argument("--temperature", type=float, default=d.temperature, help="sampling temperature (0: greedy)")
    g.add_argument("--lora", action="store_true", help="LoRA fine-tune the checkpoint (only a and b train and are saved)")
    g.add_argument("--lora-rank", type=int, default=d.lora_rank, help="LoRA rank")
    g.add_argument("--lora-steps", type=int, default=d.lora_steps, help="LoRA fine-tuning steps")
    g.add_argument("--int4", action="store_true", help="quantise the checkpoint's weights to int4, report the "
                   "held-out loss change and weight bytes (and sample with --sample)")
    args = vars(p.parse_args(argv))
    allowed = tuple(dict.fromkeys(name.strip().lstrip("-").replace("-", "_")
                                  for name in args["allow_config_change"].split(",") if name.strip()))
    stored = run_config(d)
    if unknown := [name for name in allowed if name not in stored]:
        p.error(f"--allow-config-change: unknown option(s) {', '.join(unknown)} (choose from "
                f"{', '.join(k.replace('_', '-') for k in stored if k not in CONFIG_MAY_CHANGE)})")
    args["allow_config_change"] = allowed
    opts = TrainOptions(**args)
    if opts.keep_checkpoints < 0:
        p.error("--keep-checkpoints must be >= 0")
    if opts.tp < 1 or opts.steps < 0 or opts.batch_size < 1:
        p.error("--tp and --batch-size must be >= 1 and --steps >= 0")
    return opts


def _set_device_flags(opts: TrainOptions) -> None:
    """Ask XLA for ``opts.devices`` CPU devices; must run before jax is imported."""
    if opts.devices is not None:
        if "jax" in sys.modules:
            raise RuntimeError("--devices must be applied before jax is imported")
        flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
        os.environ["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={opts.devices}"])
        os.environ.setdefault("JAX_PLATFORMS", "cpu")


if __name__ == "__main__":
    _OPTIONS = parse_args()
    _set_device_flags(_OPTIONS)

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402

import namax as nx  # noqa: E402
from namax.partitioning import pspec_for  # noqa: E402

from namax import checkpoint  # noqa: E402
from namax.models import gpt2  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt import GPT, GPTConfig, loss_fn, num_parameters  # noqa: E402
from lm_data import VOCAB_SIZE, batch_at, eval_batches, load_corpus  # noqa: E402


# --- set-up ----------------------------------------------------------------------------------
def init_distributed(opts: TrainOptions) -> None:
    """``jax.distributed.initialize`` for a multi-process run (CPU collectives over gloo)."""
    if opts.num_processes > 1:
        if opts.coordinator is None:
            raise ValueError("--num-processes > 1 needs --coordinator HOST:PORT")
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(opts.coordinator, num_processes=opts.num_processes, process_id=opts.process_id)


def model_config(opts: TrainOptions) -> GPTConfig:
    return GPTConfig(seq_len=opts.seq_len, embed=opts.embed, heads=opts.heads, layers=opts.layers, vocab=VOCAB_SIZE)


def with_hf_architecture(opts: TrainOptions) -> TrainOptions:
    """``opts`` with the model shape of the GPT-2 folder ``opts.init_from_hf`` (checked to fit)."""
    hf = gpt2.load_hf_config(opts.init_from_hf)
    if hf.vocab_size != VOCAB_SIZE:
        raise ValueError(f"--init-from-hf {opts.init_from_hf}: the model has vocab_size {hf.vocab_size}, but the demo "
                         f"reads bytes (vocab {VOCAB_SIZE}); save a GPT-2 with vocab_size={VOCAB_SIZE}")
    if hf.n_positions < opts.seq_len:
        raise ValueError(f"--init-from-hf {opts.init_from_hf}: the model has {hf.n_positions} positions, fewer "
                         f"than --seq-len {opts.seq_len}")
    return dataclasses.replace(opts, embed=hf.n_embd, heads=hf.n_head, layers=hf.n_layer)


def initial_model(opts: TrainOptions, config: GPTConfig) -> GPT:
    """A fresh GPT from ``--seed``, or the weights of ``--init-from-hf`` by axis name."""
    if opts.init_from_hf is None:
        return eqx.filter_jit(GPT.init)(config, key=jax.random.key(opts.seed))
    template = eqx.filter_eval_shape(GPT.init, config, key=jax.random.key(opts.seed))
    return gpt2.from_hf_into(template, opts.init_from_hf, positions=opts.seq_len)


def make_mesh(opts: TrainOptions) -> jax.sharding.Mesh:
    """A ``(data, model)`` mesh over every device of every process (``--devices`` per process, if given)."""
    n = jax.device_count() if opts.devices is None else opts.devices * jax.process_count()
    if n > jax.device_count():
        raise ValueError(f"--devices {opts.devices} asks for {n} devices, there are {jax.device_count()}")
    if n % opts.tp:
        raise ValueError(f"--tp {opts.tp} does not divide the {n} devices")
    return jax.make_mesh((n // opts.tp, opts.tp), ("data", "model"), axis_types=(AxisType.Auto, AxisType.Auto),
                         devices=jax.devices()[:n])


def axis_mappings(opts: TrainOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(compute, parameter)`` axis mappings: the whole sharding strategy, by name."""
    compute: dict[str, Any] = {"batch": "data"}
    params: dict[str, Any] = {}
    if opts.tp > 1:
        compute.update(heads="model", mlp="model")
        params.update(heads="model", mlp="model")
    if opts.fsdp:
        params["embed"] = "data"
    return compute, params


def make_optimizer(opts: TrainOptions, steps: int) -> optax.GradientTransformation:
    """AdamW with linear warm-up and cosine decay to 10%; weight decay on matrices only."""
    schedule = optax.warmup_cosine_decay_schedule(0.0, opts.learning_rate, min(opts.warmup, max(steps - 1, 1)),
                                                  max(steps, 2), end_value=0.1 * opts.learning_rate)

    def decay_mask(params):
        # matrices: two or more axes besides the stacked "layers" axis
        return jax.tree_util.tree_map(
            lambda x: isinstance(x, nx.NamedArray) and len([n for n in x.axis_names if n != "layers"]) >= 2,
            params, is_leaf=nx.is_named)

    return optax.chain(optax.clip_by_global_norm(1.0),
                       optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=opts.weight_decay, mask=decay_mask))


def global_batch(make_rows: Callable[[slice], tuple[np.ndarray, np.ndarray]], shape: tuple[int, int], mesh,
                 mapping) -> tuple[nx.NamedArray, nx.NamedArray]:
    """``(inputs, targets)``, ``[batch, position]`` NamedArrays placed by ``mapping``.

    ``make_rows(rows)`` returns the ``(inputs, targets)`` rows of a slice of the global
    batch; it is called only for the rows this process's devices hold (once per distinct
    slice), so in a multi-process run each process loads just its shard.
    """
    names = ("batch", "position")
    sharding = NamedSharding(mesh, pspec_for(names, shape, mapping, mesh, what="batch"))
    loaded: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def part(which: int, index: tuple[slice, ...]) -> np.ndarray:
        rows = index[0]
        key = rows.indices(shape[0])
        if key not in loaded:
            loaded[key] = make_rows(rows)
        return loaded[key][which][(slice(None), *index[1:])]

    axes = (nx.Axis("batch", shape[0]), nx.Axis("position", shape[1]))
    return tuple(nx.NamedArray(jax.make_array_from_callback(shape, sharding, lambda index, w=w: part(w, index)), axes)
                 for w in (0, 1))


# --- the step ----------------------------------------------------------------------------------
def make_train_step(static, optimizer, mesh, compute_map, param_map):
    """``step(params, opt_state, inputs, targets) -> (params, opt_state, loss)`` under namedjit."""

    def step(params, opt_state, inputs, targets):
        loss, grads = jax.value_and_grad(lambda p: loss_fn(eqx.combine(p, static), inputs, targets))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return nx.namedjit(step, axis_resources=compute_map, mesh=mesh, in_axis_resources={0: param_map, 1: param_map},
                       out_axis_resources=param_map, donate_argnums=(0, 1))


def make_eval_step(static, mesh, compute_map, param_map):
    """``eval(params, inputs, targets) -> loss`` under namedjit."""
    return nx.namedjit(lambda p, x, y: loss_fn(eqx.combine(p, static), x, y), axis_resources=compute_map, mesh=mesh,
                       in_axis_resources={0: param_map})


@dataclasses.dataclass
class TrainResult:
    losses: dict[int, float]            # step -> training loss of that step
    eval_losses: dict[int, float]       # step -> held-out loss after that many steps
    params: Any
    static: Any
    tokens_per_second: float


def evaluate(eval_step, params, batches, mesh, compute_map) -> float:
    """Mean held-out loss over ``batches`` (``(inputs, targets)`` NumPy pairs)."""
    total = 0.0
    for x, y in batches:
        inputs, targets = global_batch(lambda rows, x=x, y=y: (x[rows], y[rows]), x.shape, mesh, compute_map)
        total += float(eval_step(params, inputs, targets))
    return total / len(batches)


def train(opts: TrainOptions, log=print) -> TrainResult:
    """Train (or resume) per ``opts``; return the losses and the final parameters.

    Every process of a multi-process run calls this; only process 0 logs.
    """
    if jax.process_index() != 0:
        log = _silent
    if opts.init_from_hf is not None:
        opts = with_hf_architecture(opts)
    config = model_config(opts)
    mesh = make_mesh(opts)
    compute_map, param_map = axis_mappings(opts)
    train_data, held_out = load_corpus()
    model = initial_model(opts, config)
    params, static = eqx.partition(model, eqx.is_array)
    optimizer = make_optimizer(opts, opts.steps)
    opt_state = optimizer.init(params)
    start = 0
    if not opts.resume and jax.process_index() == 0:
        # a fresh run: older step files would make a later --resume pick up the wrong run
        stale = checkpoint.list_checkpoints(opts.checkpoint_dir)
        for _, old in stale:
            old.unlink()
        if stale:
            log(f"fresh run: removed {len(stale)} older checkpoint(s) from {opts.checkpoint_dir}")
    if opts.resume:
        # damaged or mismatched files are skipped (one warning line each, on stderr); a run with
        # other settings raises checkpoint.ConfigMismatchError
        restored = checkpoint.restore(opts.checkpoint_dir, {"params": params, "opt_state": opt_state},
                                      config=run_config(opts),
                                      allow_config_change=CONFIG_MAY_CHANGE | set(opts.allow_config_change))
        if restored is None:
            log(f"--resume: no checkpoint in {opts.checkpoint_dir}, starting at step 0")
        else:
            start, trees, meta = restored
            params, opt_state = trees["params"], trees["opt_state"]
            log(f"resumed from {meta['path']} at step {start}"
                + (f" (skipped {len(meta['skipped'])} unusable newer file(s))" if meta["skipped"] else ""))
    params = nx.shard(params, param_map, mesh)
    opt_state = nx.shard(opt_state, param_map, mesh)
    train_step = make_train_step(static, optimizer, mesh, compute_map, param_map)
    eval_step = make_eval_step(static, mesh, compute_map, param_map)
    evals = eval_batches(held_out, opts.batch_size, opts.seq_len, opts.eval_batches)
    log(f"GPT {num_parameters(model):,} parameters, {jax.device_count()} devices in {jax.process_count()} process(es), "
        f"mesh {dict(mesh.shape)}, compute {compute_map}, parameters {param_map or 'replicated'}")

    bar = None
    if opts.progress and jax.process_index() == 0:
        from tqdm import tqdm

        bar = tqdm(total=opts.steps, initial=start, unit="step", dynamic_ncols=True)
    losses: dict[int, float] = {}
    eval_losses: dict[int, float] = {}
    tokens, elapsed = 0, 0.0
    shape = (opts.batch_size, opts.seq_len)
    end = opts.steps if opts.stop_at is None else min(opts.steps, opts.stop_at)
    for step in range(start, end):
        t0 = time.perf_counter()
        inputs, targets = global_batch(
            lambda rows, step=step: batch_at(train_data, step, *shape, seed=opts.seed, rows=rows), shape, mesh,
            compute_map)
        params, opt_state, loss = train_step(params, opt_state, inputs, targets)
        losses[step] = float(loss)
        if step > start:  # the first step of a run includes compilation
            elapsed += time.perf_counter() - t0
            tokens += inputs.array.size
        rate = tokens / elapsed if elapsed else 0.0
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[step]:.3f}", tok_s=f"{rate:,.0f}")
        done = step + 1
        if opts.log_every and done % opts.log_every == 0:
            msg = f"step {done}: loss {losses[step]!r}"
            bar.write(msg) if bar is not None else log(msg)
        if opts.eval_every and (done % opts.eval_every == 0 or done == opts.steps):
            eval_losses[done] = evaluate(eval_step, params, evals, mesh, compute_map)
            msg = f"step {done}: train loss {losses[step]:.4f}, held-out loss {eval_losses[done]:.4f} nats/byte"
            bar.write(msg) if bar is not None else log(msg)
        if opts.checkpoint_every and (done % opts.checkpoint_every == 0 or done in (opts.steps, end)):
            path = checkpoint.save(opts.checkpoint_dir, done, {"params": params, "opt_state": opt_state},
                                   extra={"config": dataclasses.asdict(config), "kind": "full"},
                                   config=run_config(opts), keep=opts.keep_checkpoints or None)
            msg = f"saved {path}"
            bar.write(msg) if bar is not None else log(msg)
    if bar is not None:
        bar.close()
    return TrainResult(losses, eval_losses, params, static, tokens / elapsed if elapsed else 0.0)


def _silent(*_: Any) -> None:
    """The ``log`` of processes other than 0."""


def load_model(opts: TrainOptions) -> tuple[GPT, dict]:
    """The newest usable full checkpoint in ``--checkpoint-dir`` as a GPT (its own config)."""
    statics = {}

    def templates(meta: dict) -> dict:
        if meta["extra"].get("kind") != "full":
            raise checkpoint.CheckpointError(meta["path"], f"not a full model checkpoint "
                                                           f"(kind={meta['extra'].get('kind')!r})")
        template = eqx.filter_eval_shape(GPT.init, GPTConfig(**meta["extra"]["config"]), key=jax.random.key(0))
        params, statics[meta["path"]] = eqx.partition(template, lambda x: isinstance(x, jax.ShapeDtypeStruct))
        return {"params": params}

    restored = checkpoint.restore(opts.checkpoint_dir, templates)
    if restored is None:
        raise FileNotFoundError(f"no step_*.safetensors in {opts.checkpoint_dir!r}: train first")
    _, trees, meta = restored
    return eqx.combine(jax.tree_util.tree_map(jnp.asarray, trees["params"]), statics[meta["path"]]), meta


def run_int4(opts: TrainOptions, log=print) -> dict[str, float]:
    """``--int4``: the newest checkpoint with every ``nn.Linear`` weight in int4; held-out loss, bytes, a sample.

    Quantised: the attention (qkv, out) and MLP weights of every block, each grouped along
    its Linear's ``In`` axes, with the ``layers`` axis as a stack dim, so the blocks still
    run under ``lax.scan`` one layer's codes at a time. Asymmetric (one zero point per
    group, which follows a layer's skewed weights more closely) at the largest group size
    of 128, 64 or 32 that divides every ``In`` size. Kept
    dense: the token and position embeddings (their rows are gathered, which int4 codes
    do not support without materializing; the token table is also the tied unembedding),
    the LayerNorms and the biases (small: quantising them saves almost nothing). The model
    runs through ``use_implicit_args``; sampling drives ``sample.fill`` that way too.
    """
    import math

    import namax.nn as nn
    import namax.quant as qax
    import sample

    model, meta = load_model(opts)
    config = model.config
    linears = [n for n in jax.tree_util.tree_leaves(model, is_leaf=lambda n: isinstance(n, nn.Linear))
               if isinstance(n, nn.Linear)]
    in_names = lambda lin: tuple(a.name for a in (lin.In if isinstance(lin.In, tuple) else (lin.In,)))  # noqa: E731
    in_sizes = [math.prod(lin.weight.axis_size(n) for n in in_names(lin)) for lin in linears]
    group = next((g for g in (128, 64, 32) if all(k % g == 0 for k in in_sizes)), None)
    if group is None:
        raise SystemExit(f"--int4: no group size of 128, 64 or 32 divides the Linear input sizes {in_sizes}")

    def quantize_linear(node):
        if not isinstance(node, nn.Linear):
            return node
        stack = ("layers",) if node.weight.has_axis("layers") else ()
        w = qax.int4.quantize_named(node.weight, in_names(node), stack, group_size=group, symmetric=False)
        return eqx.tree_at(lambda lin: lin.weight, node, w)

    qmodel = jax.tree_util.tree_map(quantize_linear, model, is_leaf=lambda n: isinstance(n, nn.Linear))
    is_int4 = lambda x: isinstance(x, qax.Int4Weight)  # noqa: E731
    codes = [x for x in jax.tree_util.tree_leaves(qmodel, is_leaf=is_int4) if is_int4(x)]
    dense_linear = sum(lin.weight.array.size * lin.weight.array.dtype.itemsize for lin in linears)
    int4_linear = sum(qax.int4.weight_bytes(q) for q in codes)
    dense_total = qax.int4.weight_bytes(eqx.filter(model, eqx.is_array))
    int4_total = qax.int4.weight_bytes(eqx.filter(qmodel, eqx.is_array))

    Batch = nx.Axis("batch", opts.batch_size)
    _, held_out = load_corpus()
    evals = [(nx.named(jnp.asarray(x), (Batch, config.Pos)), nx.named(jnp.asarray(y), (Batch, config.Pos)))
             for x, y in eval_batches(held_out, opts.batch_size, config.seq_len, opts.eval_batches)]
    dense_loss = eqx.filter_jit(loss_fn)
    int4_loss = eqx.filter_jit(qax.use_implicit_args(loss_fn))
    dense = sum(float(dense_loss(model, x, y)) for x, y in evals) / len(evals)
    quant = sum(float(int4_loss(qmodel, x, y)) for x, y in evals) / len(evals)
    log(f"# {opts.checkpoint_dir} at step {meta['step']}: {len(codes)} stacked Linear weights in int4 "
        f"(group {group}, asymmetric); embeddings, LayerNorms and biases dense")
    log(f"Linear weights: {dense_linear:,} bytes f32 -> {int4_linear:,} bytes int4 "
        f"({int4_linear / dense_linear:.3f}x, {8 * int4_linear / sum(q.size for q in codes):.2f} bits/param)")
    log(f"whole model: {dense_total:,} -> {int4_total:,} bytes ({int4_total / dense_total:.3f}x)")
    log(f"held-out loss: dense {dense:.4f}, int4 {quant:.4f} nats/byte ({quant - dense:+.4f})")
    result = {"dense_loss": dense, "int4_loss": quant, "dense_linear_bytes": dense_linear,
              "int4_linear_bytes": int4_linear, "dense_bytes": dense_total, "int4_bytes": int4_total}
    if opts.sample is not None:
        plain_fill = sample.fill
        sample.fill = eqx.filter_jit(qax.use_implicit_args(plain_fill))  # generate() looks fill up at call time
        try:
            text = sample.generate(qmodel, opts.sample, opts.sample_tokens, temperature=opts.temperature,
                                   key=jax.random.key(opts.seed))
        finally:
            sample.fill = plain_fill
        log(f"# int4 sample, temperature {opts.temperature}")
        log(text)
        result["sample"] = text
    return result


def main(opts: TrainOptions) -> None:
    try:
        _main(opts)
    except checkpoint.ConfigMismatchError as e:
        flags = ", ".join(f"--{k.replace('_', '-')} {old!r} -> {new!r}" for k, (old, new) in e.changes.items())
        raise SystemExit(f"--resume: {e.path} was saved by a run with other settings: {flags}. Resume with the "
                         f"same settings, or pass --allow-config-change "
                         f"{','.join(k.replace('_', '-') for k in e.changes)} to continue with the new ones.")
    except checkpoint.CheckpointError as e:
        raise SystemExit(f"error: {e}")


def _main(opts: TrainOptions) -> None:
    init_distributed(opts)
    if opts.lora:
        from lora_finetune import finetune

        finetune(opts)
    elif opts.int4:
        run_int4(opts)
    elif opts.sample is not None:
        from sample import generate

        model, meta = load_model(opts)
        print(f"# {opts.checkpoint_dir} at step {meta['step']}, temperature {opts.temperature}")
        print(generate(model, opts.sample, opts.sample_tokens, temperature=opts.temperature,
                       key=jax.random.key(opts.seed)))
    else:
        result = train(opts)
        if result.losses and jax.process_index() == 0:
            first, last = result.losses[min(result.losses)], result.losses[max(result.losses)]
            print(f"loss {first:.3f} -> {last:.3f} nats/byte, {result.tokens_per_second:,.0f} tokens/s")
        if opts.sample_after and opts.num_processes == 1 and checkpoint.latest(opts.checkpoint_dir) is not None:
            from sample import generate

            model, meta = load_model(opts)
            print(f"# sample from {opts.checkpoint_dir} at step {meta['step']}, temperature {opts.temperature}")
            print(generate(model, opts.sample_after, opts.sample_tokens, temperature=opts.temperature,
                           key=jax.random.key(opts.seed)))


if __name__ == "__main__":
    main(_OPTIONS)
