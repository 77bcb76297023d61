"""``train_lm.py --lora``: LoRA fine-tuning of a trained checkpoint with ``namax.quant``.

Every MLP weight of the newest full checkpoint becomes a ``LoraWeight`` (``w`` frozen,
rank-``r`` factors ``a`` and ``b`` trained; ``b = 0`` so training starts from the base
model). The step runs the named model through ``use_implicit_args``, which rewrites each
``x . (w + a b^T)`` into ``x w + (x a) b^T``. The saved checkpoint holds only the factors
(``kind = "lora"``), with the base checkpoint's path in its metadata.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import namax as nx
import namax.quant as qax
import checkpoint
from gpt import loss_fn
from lm_data import batch_at, eval_batches, load_corpus


def _is_mlp_weight(path, leaf) -> bool:
    key = jax.tree_util.keystr(path)
    return ".mlp." in key and ".weight" in key


def finetune(opts) -> dict[str, float]:
    """Fine-tune per ``opts`` (see ``train_lm.TrainOptions``); return held-out losses before and after."""
    from train_lm import load_model

    model, meta = load_model(opts)
    config = model.config
    params, static = eqx.partition(model, eqx.is_array)
    lora_params = qax.lora.wrap(params, opts.lora_rank, jax.random.key(opts.seed + 1), where=_is_mlp_weight)
    adam = optax.adamw(optax.cosine_decay_schedule(opts.learning_rate / 3, max(opts.lora_steps, 1)), weight_decay=0.0)
    is_lora = lambda x: isinstance(x, qax.LoraWeight)  # noqa: E731
    def labels(tree):  # a function: optax would call a (callable) GPT module given directly
        return jax.tree_util.tree_map(lambda x: "lora" if is_lora(x) else "frozen", tree, is_leaf=is_lora)

    # LoRA factors train (their ``w`` stays frozen); every other parameter is frozen too
    optimizer = optax.multi_transform({"lora": qax.lora.optimizer(adam), "frozen": optax.set_to_zero()}, labels)
    opt_state = optimizer.init(lora_params)
    loss = qax.use_implicit_args(lambda p, x, y: loss_fn(eqx.combine(p, static), x, y))

    @jax.jit
    def step(p, state, x, y):
        value, grads = jax.value_and_grad(loss)(p, x, y)
        updates, state = optimizer.update(grads, state, p)
        return optax.apply_updates(p, updates), state, value

    eval_loss = jax.jit(loss)
    train_data, held_out = load_corpus()
    Batch = nx.Axis("batch", opts.batch_size)

    def named(a):
        return nx.named(jnp.asarray(a), (Batch, config.Pos))

    evals = [(named(x), named(y)) for x, y in eval_batches(held_out, opts.batch_size, config.seq_len, opts.eval_batches)]

    def held_out_loss(p) -> float:
        return sum(float(eval_loss(p, x, y)) for x, y in evals) / len(evals)

    before = held_out_loss(lora_params)
    for i in range(opts.lora_steps):
        x, y = batch_at(train_data, i, opts.batch_size, config.seq_len, seed=opts.seed + 1000)
        lora_params, opt_state, value = step(lora_params, opt_state, named(x), named(y))
    after = held_out_loss(lora_params)
    factors = qax.lora.factors(lora_params)
    frozen_same = all(bool(jnp.array_equal(f.w, g.w)) for f, g in zip(
        factors, qax.lora.factors(qax.lora.wrap(params, opts.lora_rank, jax.random.key(0), where=_is_mlp_weight))))
    trees = {"lora_a": [f.a for f in factors], "lora_b": [f.b for f in factors]}
    out_dir = opts.checkpoint_dir.rstrip("/") + "_lora"
    path = checkpoint.save(out_dir, opts.lora_steps, trees,
                           extra={"kind": "lora", "rank": opts.lora_rank, "base": str(meta.get("step")),
                                  "base_dir": opts.checkpoint_dir, "config": dataclasses.asdict(config)})
    trained = sum(f.a.size + f.b.size for f in factors)
    total = sum(x.size for x in jax.tree_util.tree_leaves(params))
    print(f"LoRA rank {opts.lora_rank} on {len(factors)} MLP weights: {trained:,} trained of {total:,} parameters "
          f"(base weights unchanged: {frozen_same})")
    print(f"held-out loss {before:.4f} -> {after:.4f} nats/byte after {opts.lora_steps} steps; saved {path}")
    return {"before": before, "after": after}


__all__ = ["finetune"]
