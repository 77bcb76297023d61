"""transformers' unmodified ``FlaxGPT2LMHeadModel`` (random init, no download) under namedjit.

The parameters are named by path (:func:`namax.hf.flax_gpt2_names`) and the token ids as
``("batch", "position")``; every value is compared with plain ``jax.jit`` of the same
function. Covers: forward and forward+backward, the share of named dims, data and tensor
parallelism, LoRA (forward, merged-weight equivalence, an optax step) and int4
(forward, ``nx.dump``'s implicit counts, Flax's parameter shape check).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import namax as nx
import namax.quant as qax
from namax.hf import GPT2_MEGATRON, flax_gpt2_names

from .helpers import assert_trees_close, collective_counts, report, specs, strict_warnings

import transformers  # noqa: E402  (the test extra pins a version that still ships the Flax models)

CONFIG = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=128, n_positions=32)
BATCH, SEQ = 8, 16
NAMED_DIM_FLOOR = 0.85  # share of named intermediate dims (forward and forward+backward)


# --- the model, its parameters and their names ------------------------------------------


def is_kernel(path: tuple, leaf) -> bool:
    return getattr(path[-1], "key", None) == "kernel"


@pytest.fixture(scope="module")
def gpt2():
    """``(model, params, ids, in_axes)``. Parameters come from numpy's RNG on the shapes
    the model's own init gives (its jitted random init alone takes seconds on CPU)."""
    config = transformers.GPT2Config(**CONFIG)
    model = transformers.FlaxGPT2LMHeadModel(config, seed=0, _do_init=False)
    shapes = jax.eval_shape(functools.partial(model.init_weights, input_shape=(1, 1)), jax.random.key(0))
    rng = np.random.default_rng(0)

    def init(path, s):
        kind = path[-1].key
        if kind == "scale":
            value = 1.0 + 0.1 * rng.standard_normal(s.shape)
        elif kind == "bias":
            value = 0.05 * rng.standard_normal(s.shape)
        else:
            value = 0.2 * rng.standard_normal(s.shape)
        return jnp.asarray(value, s.dtype)

    params = jax.tree_util.tree_map_with_path(init, shapes)
    ids = jax.random.randint(jax.random.key(1), (BATCH, SEQ), 0, CONFIG["vocab_size"], dtype=jnp.int32)
    in_axes = (flax_gpt2_names(params), ("batch", "position"))
    return model, params, ids, in_axes


SEEN: list = []
"""What the int4 forward's trace saw as kernels: (is a dense array, shape) per kernel."""


def make_fns(model):
    def forward(params, ids):
        return model(ids, params=params).logits

    def loss(params, ids):
        logits = model(ids, params=params).logits
        logp = jax.nn.log_softmax(logits[:, :-1])
        return -jnp.mean(jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1))

    def forward_recording(params, ids):
        SEEN.extend((isinstance(leaf, jax.Array) and not qax.is_implicit(leaf), tuple(leaf.shape))
                    for path, leaf in jax.tree_util.tree_leaves_with_path(params, is_leaf=qax.is_implicit)
                    if is_kernel(path, leaf))
        return forward(params, ids)

    return forward, loss, forward_recording


@pytest.fixture(scope="module")
def fns(gpt2):
    return make_fns(gpt2[0])


@pytest.fixture(scope="module")
def jit_forward(fns):
    return jax.jit(fns[0])


@pytest.fixture(scope="module")
def reference(gpt2, fns, jit_forward):
    """Plain ``jax.jit`` values: logits and (loss, grads)."""
    _, params, ids, _ = gpt2
    forward, loss, _ = fns
    return jit_forward(params, ids), jax.jit(jax.value_and_grad(loss))(params, ids)


@pytest.fixture(scope="module")
def nx_forward(gpt2, fns):
    """One namedjit forward shared by the dense, LoRA and int4 tests (one trace per structure)."""
    return nx.namedjit(fns[0], in_axes=gpt2[3])


# --- (a) forward and forward+backward equal jax.jit ------------------------------------


def test_forward_matches_jit(gpt2, reference, nx_forward):
    _, params, ids, _ = gpt2
    got = nx_forward(params, ids)
    assert isinstance(got, jax.Array) and got.shape == (BATCH, SEQ, CONFIG["vocab_size"])
    report("gpt2 forward", max_abs_diff=assert_trees_close(got, reference[0]))


def test_forward_backward_matches_jit(gpt2, fns, reference):
    _, params, ids, in_axes = gpt2
    got = nx.namedjit(jax.value_and_grad(fns[1]), in_axes=in_axes)(params, ids)
    report("gpt2 forward+backward", max_abs_diff=assert_trees_close(got, reference[1]))


# --- (b) names: the share of named dims -----------------------------------------------


def test_named_dims(gpt2, fns):
    _, params, ids, in_axes = gpt2
    forward, loss, _ = fns
    fwd = nx.infer_names(forward, params, ids, in_axes=in_axes)
    assert fwd.out_names == [("batch", "position", "vocab")]
    bwd = nx.infer_names(jax.value_and_grad(loss), params, ids, in_axes=in_axes)
    # the gradient of each parameter carries that parameter's names
    param_leaf_names = jax.tree_util.tree_leaves(in_axes[0], is_leaf=lambda n: isinstance(n, tuple))
    assert bwd.out_names == [()] + param_leaf_names
    fractions = {}
    for what, r in (("forward", fwd), ("forward+backward", bwd)):
        named, total = r.dim_coverage()
        fractions[what] = named / total
        report(f"gpt2 named dims {what}", named=named, total=total, fraction=f"{named / total:.3f}",
               unknown_primitives=r.unknown_primitives)
    assert fractions["forward"] >= NAMED_DIM_FLOOR, fractions
    assert fractions["forward+backward"] >= NAMED_DIM_FLOOR, fractions


# --- (c) data and tensor parallelism ----------------------------------------------------


def test_data_parallel_forward_is_sharded_by_batch(gpt2, fns, reference):
    _, params, ids, in_axes = gpt2
    mesh = jax.make_mesh((8, 1), ("data", "model"))
    f = nx.namedjit(fns[0], in_axes=in_axes, axis_resources={"batch": "data"}, mesh=mesh)
    got = f(params, ids)
    assert got.sharding.spec == P("data", None, None)
    assert got.sharding.mesh.shape == mesh.shape
    assert_trees_close(got, reference[0])


def test_data_parallel_gradients_all_reduce(gpt2, fns, reference):
    _, params, ids, in_axes = gpt2
    mesh = jax.make_mesh((8, 1), ("data", "model"))
    f = nx.namedjit(jax.value_and_grad(fns[1]), in_axes=in_axes, axis_resources={"batch": "data"}, mesh=mesh)
    compiled = f.lower(params, ids).compile()
    counts = collective_counts(compiled.as_text())
    assert counts.get("all-reduce", 0) >= 1, counts
    *param_shardings, ids_sharding = jax.tree_util.tree_leaves(compiled.input_shardings)
    assert ids_sharding.shard_shape(ids.shape) == (BATCH // 8, SEQ), ids_sharding  # split over the batch
    assert all(s.is_fully_replicated for s in param_shardings)
    got = compiled(params, ids)
    diff = assert_trees_close(got, reference[1])
    assert all(s == P() or all(a is None for a in s) for s in specs(got))  # loss and grads replicated
    report("gpt2 data parallel (8x1) forward+backward", collectives=counts, max_abs_diff=diff)


def test_tensor_parallel_matches_and_shards_weights(gpt2, fns, reference):
    _, params, ids, in_axes = gpt2
    mesh = jax.make_mesh((4, 2), ("data", "model"))
    mapping = GPT2_MEGATRON
    f = nx.namedjit(jax.value_and_grad(fns[1]), in_axes=in_axes, axis_resources=mapping, mesh=mesh)
    compiled = f.lower(params, ids).compile()
    counts = collective_counts(compiled.as_text())
    assert sum(counts.values()) >= 1, counts
    loss, grads = compiled(params, ids)
    diff = assert_trees_close((loss, grads), reference[1])
    block = grads["transformer"]["h"]["0"]
    assert block["mlp"]["c_fc"]["kernel"].sharding.spec == P("model", None)
    assert block["mlp"]["c_proj"]["kernel"].sharding.spec == P(None, "model")
    assert block["attn"]["c_attn"]["kernel"].sharding.spec == P("model", None)
    assert block["attn"]["c_proj"]["kernel"].sharding.spec == P(None, "model")  # row-parallel over heads
    report("gpt2 tensor parallel (4x2, heads+mlp+qkv on model) forward+backward", collectives=counts, max_abs_diff=diff)


# --- (d) LoRA ----------------------------------------------------------------------------


def _is_lora(x) -> bool:
    return isinstance(x, qax.LoraWeight)


@pytest.fixture(scope="module")
def lora_params(gpt2):
    """``(b = 0, b random)`` LoRA versions of the parameters (every float matrix wrapped)."""
    params = gpt2[1]
    zero_b = qax.lora.wrap(params, rank=4, key=jax.random.key(2), alpha=2.0)
    keys = iter(jax.random.split(jax.random.key(3), 64))
    random_b = jax.tree_util.tree_map(
        lambda l: qax.LoraWeight(l.w, l.a, 0.5 * jax.random.normal(next(keys), l.b.shape), alpha=l.alpha)
        if _is_lora(l) else l, zero_b, is_leaf=_is_lora)
    return zero_b, random_b


def test_lora_wraps_the_matrices(gpt2, lora_params):
    wrapped = [jax.tree_util.keystr(p) for p, l in jax.tree_util.tree_leaves_with_path(lora_params[0], is_leaf=_is_lora)
               if _is_lora(l)]
    matrices = [jax.tree_util.keystr(p) for p, l in jax.tree_util.tree_leaves_with_path(gpt2[1]) if l.ndim == 2]
    assert wrapped == matrices and len(wrapped) == 4 * CONFIG["n_layer"] + 2  # kernels, wte, wpe


def test_lora_with_zero_b_equals_original(gpt2, reference, nx_forward, lora_params):
    with strict_warnings():
        got = nx_forward(lora_params[0], gpt2[2])
    report("gpt2 lora b=0", max_abs_diff=assert_trees_close(got, reference[0]))


def test_lora_matches_merged_dense_weights(gpt2, reference, jit_forward, nx_forward, lora_params):
    ids = gpt2[2]
    lora = lora_params[1]
    merged = qax.lora.merge(lora)
    # the reference merge is w + (alpha / rank) a b^T
    leaf = lora["transformer"]["h"]["0"]["mlp"]["c_fc"]["kernel"]
    np.testing.assert_allclose(merged["transformer"]["h"]["0"]["mlp"]["c_fc"]["kernel"],
                               leaf.w + (leaf.alpha / leaf.rank) * leaf.a @ leaf.b.T, rtol=1e-6, atol=1e-6)
    with strict_warnings():
        got = nx_forward(lora, ids)
    want = jit_forward(merged, ids)
    diff = assert_trees_close(got, want)
    assert not np.allclose(got, reference[0], atol=1e-2)  # the low-rank term is exercised
    report("gpt2 lora b random vs merged", max_abs_diff=diff)


def test_lora_sgd_step_moves_only_the_factors(gpt2, fns, lora_params):
    _, params, ids, in_axes = gpt2
    lora = lora_params[1]
    grad_fn = jax.grad(qax.use_implicit_args(fns[1]))
    with strict_warnings():
        grads = nx.namedjit(grad_fn, in_axes=in_axes, implicit="pytree")(lora, ids)
    want = jax.jit(grad_fn)(lora, ids)
    report("gpt2 lora grads vs jax.jit", max_abs_diff=assert_trees_close(grads, want, atol=2e-5))

    opt = qax.lora.optimizer(optax.sgd(0.1))
    updates, _ = opt.update(grads, opt.init(lora), lora)
    new = optax.apply_updates(lora, updates)
    old_leaves = jax.tree_util.tree_leaves_with_path(lora, is_leaf=_is_lora)
    new_leaves = jax.tree_util.tree_leaves(new, is_leaf=_is_lora)
    assert len(old_leaves) == len(new_leaves)
    for (path, old), fresh in zip(old_leaves, new_leaves):
        where = jax.tree_util.keystr(path)
        if _is_lora(old):
            assert _is_lora(fresh), where
            np.testing.assert_array_equal(fresh.w, old.w, err_msg=where)
            assert not np.allclose(fresh.a, old.a), where
            assert not np.allclose(fresh.b, old.b), where
        else:
            np.testing.assert_array_equal(fresh, old, err_msg=where)


# --- (e) int4, (f) dump, regression (iv) -----------------------------------------------


@pytest.fixture(scope="module")
def int4_params(gpt2):
    # FlaxConv1D kernels are (out, in): the contraction dim is 1
    return qax.int4.quantize(gpt2[1], where=is_kernel, group_size=16, in_axis=1)


@pytest.fixture(scope="module")
def int4_run(gpt2, fns, int4_params):
    """The int4 forward under namedjit (no warning allowed) and what its trace saw."""
    SEEN.clear()
    with strict_warnings():
        got = nx.namedjit(fns[2], in_axes=gpt2[3])(int4_params, gpt2[2])
    return got, list(SEEN)


def test_int4_matches_dequantized_dense(gpt2, jit_forward, int4_params, int4_run):
    kernels = [l for l in jax.tree_util.tree_leaves(int4_params, is_leaf=lambda x: isinstance(x, qax.Int4Weight))
               if isinstance(l, qax.Int4Weight)]
    assert len(kernels) == 4 * CONFIG["n_layer"]
    want = jit_forward(qax.int4.dequantize(int4_params), gpt2[2])
    report("gpt2 int4 vs dequantized", max_abs_diff=assert_trees_close(int4_run[0], want, rtol=1e-5, atol=1e-5))


def test_int4_model_sees_dense_kernels(gpt2, int4_run):
    """Regression (iv): Flax's ``self.param`` shape check passes because the model sees the
    dense kernels (the trace got arrays of the dense shapes, not Int4Weights)."""
    seen = int4_run[1]
    dense = [tuple(l.shape) for p, l in jax.tree_util.tree_leaves_with_path(gpt2[1]) if is_kernel(p, l)]
    assert [shape for _, shape in seen] == dense
    assert all(dense_array for dense_array, _ in seen), seen


def test_int4_dump_counts_rewrites(gpt2, fns, int4_params):
    with strict_warnings():
        result = nx.dump(fns[0], int4_params, gpt2[2], in_axes=gpt2[3], stages="all")
    assert {"jaxpr", "implicit", "names"} <= set(result.stages)
    stats = result.summary.implicit
    assert stats is not None
    assert sum(stats.materialized.values()) == 0, stats
    assert stats.rewritten["dot_general"] == 4 * CONFIG["n_layer"], stats
    report("gpt2 int4 dump", rewritten=dict(stats.rewritten), materialized=dict(stats.materialized),
           values=result.summary.values, fully_named=result.summary.fully_named)
