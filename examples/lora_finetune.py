"""``train_lm.py --lora``: LoRA fine-tuning of a trained checkpoint with ``namax.quant``.

Every MLP weight of the newest full checkpoint becomes a ``LoraWeight`` (``w`` frozen,
rank-``r`` factors ``a`` and ``b`` trained; ``b = 0`` so training starts from the base
model). The step runs under ``namedjit`` with training's axis mapping (the batch over the
``data`` devices) and takes gradients with ``jax.grad(use_implicit_args(loss))``: the
handlers rewrite each ``x . (w + a b^T)`` into ``x w + (x a) b^T`` -- ``a b^T`` is never
formed -- and the gradient is with respect to ``a`` and ``b``. The saved checkpoint holds
only the factors (``kind = "lora"``), with the base checkpoint's path in its metadata.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import equinox as eqx
import jax
import optax

import namax as nx
import namax.quant as qax
import checkpoint
from gpt import loss_fn
from lm_data import batch_at, eval_batches, load_corpus


def _is_mlp_weight(path, leaf) -> bool:
    key = jax.tree_util.keystr(path)
    return ".mlp." in key and ".weight" in key


def lora_loss(static: Any) -> Callable:
    """``loss(params, inputs, targets)`` for params holding LoraWeights (their handlers applied)."""
    return qax.use_implicit_args(lambda p, x, y: loss_fn(eqx.combine(p, static), x, y))


def make_optimizer(learning_rate: float, steps: int) -> optax.GradientTransformation:
    """AdamW (cosine decay from ``learning_rate``) on the LoRA factors; everything else frozen."""
    adam = optax.adamw(optax.cosine_decay_schedule(learning_rate, max(steps, 1)), weight_decay=0.0)
    is_lora = lambda x: isinstance(x, qax.LoraWeight)  # noqa: E731

    def labels(tree):  # a function: optax would call a (callable) GPT module given directly
        return jax.tree_util.tree_map(lambda x: "lora" if is_lora(x) else "frozen", tree, is_leaf=is_lora)

    # LoRA factors train (their ``w`` stays frozen); every other parameter is frozen too
    return optax.multi_transform({"lora": qax.lora.optimizer(adam), "frozen": optax.set_to_zero()}, labels)


def make_lora_step(static: Any, optimizer: optax.GradientTransformation, mesh, compute_map, param_map):
    """``step(params, opt_state, inputs, targets) -> (params, opt_state, loss)`` under namedjit."""
    value_and_grad = jax.value_and_grad(lora_loss(static))

    def step(params, opt_state, inputs, targets):
        loss, grads = value_and_grad(params, inputs, targets)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    # implicit="pytree": the step differentiates with respect to the LoRA factors itself
    return nx.namedjit(step, axis_resources=compute_map, mesh=mesh, in_axis_resources={0: param_map, 1: param_map},
                       out_axis_resources=param_map, implicit="pytree")


def finetune(opts) -> dict[str, Any]:
    """Fine-tune per ``opts`` (see ``train_lm.TrainOptions``); return held-out losses before and after."""
    from train_lm import axis_mappings, global_batch, load_model, make_mesh

    say = print if jax.process_index() == 0 else (lambda *_: None)
    model, meta = load_model(opts)
    config = model.config
    mesh = make_mesh(opts)
    compute_map, param_map = axis_mappings(opts)
    params, static = eqx.partition(model, eqx.is_array)
    lora_params = nx.shard(qax.lora.wrap(params, opts.lora_rank, jax.random.key(opts.seed + 1), where=_is_mlp_weight),
                           param_map, mesh)
    optimizer = make_optimizer(opts.learning_rate / 3, opts.lora_steps)
    opt_state = optimizer.init(lora_params)
    step = make_lora_step(static, optimizer, mesh, compute_map, param_map)
    eval_loss = nx.namedjit(lora_loss(static), axis_resources=compute_map, mesh=mesh,
                            in_axis_resources={0: param_map})
    train_data, held_out = load_corpus()
    shape = (opts.batch_size, config.seq_len)
    evals = [global_batch(lambda rows, x=x, y=y: (x[rows], y[rows]), shape, mesh, compute_map)
             for x, y in eval_batches(held_out, *shape, opts.eval_batches)]

    def held_out_loss(p) -> float:
        return sum(float(eval_loss(p, x, y)) for x, y in evals) / len(evals)

    before = held_out_loss(lora_params)
    for i in range(opts.lora_steps):
        inputs, targets = global_batch(lambda rows, i=i: batch_at(train_data, i, *shape, seed=opts.seed + 1000,
                                                                  rows=rows), shape, mesh, compute_map)
        lora_params, opt_state, _ = step(lora_params, opt_state, inputs, targets)
    after = held_out_loss(lora_params)
    factors = qax.lora.factors(lora_params)
    base = qax.lora.factors(qax.lora.wrap(params, opts.lora_rank, jax.random.key(0), where=_is_mlp_weight))
    frozen_same = all(bool(jax.numpy.array_equal(f.w, g.w)) for f, g in zip(factors, base))
    trees = {"lora_a": [f.a for f in factors], "lora_b": [f.b for f in factors]}
    out_dir = opts.checkpoint_dir.rstrip("/") + "_lora"
    path = checkpoint.save(out_dir, opts.lora_steps, trees,
                           extra={"kind": "lora", "rank": opts.lora_rank, "base": str(meta.get("step")),
                                  "base_dir": opts.checkpoint_dir, "config": dataclasses.asdict(config)})
    trained = sum(f.a.size + f.b.size for f in factors)
    total = sum(x.size for x in jax.tree_util.tree_leaves(params))
    say(f"LoRA rank {opts.lora_rank} on {len(factors)} MLP weights: {trained:,} trained of {total:,} parameters "
        f"(base weights unchanged: {frozen_same})")
    say(f"held-out loss {before:.4f} -> {after:.4f} nats/byte after {opts.lora_steps} steps; saved {path}")
    return {"before": before, "after": after, "frozen_same": frozen_same, "path": str(path)}


__all__ = ["finetune", "lora_loss", "make_lora_step", "make_optimizer"]
