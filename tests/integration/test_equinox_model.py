"""An unmodified Equinox model (``eqx.nn`` Conv2d, MaxPool2d, LayerNorm, Linear, MLP) under namedjit.

The model holds non-array leaves (MLP's activation functions, MaxPool's ``operation`` and
``init``): namedjit keeps them static, as ``eqx.filter_jit`` does. It is called on a batch
with ``jax.vmap(model)`` inside the function. Weights are named through an ``in_axes``
pytree built with ``jax.tree_util.tree_map`` over the model (None for non-array leaves).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import namax as nx
import namax.quant as qax

from .helpers import assert_trees_close, collective_counts, fresh_copy, report, strict_warnings

BATCH, CLASSES = 8, 10


class Net(eqx.Module):
    conv: eqx.nn.Conv2d
    pool: eqx.nn.MaxPool2d
    norm: eqx.nn.LayerNorm
    linear: eqx.nn.Linear
    mlp: eqx.nn.MLP

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv = eqx.nn.Conv2d(1, 4, 3, padding=1, key=k1)
        self.pool = eqx.nn.MaxPool2d(2, 2)
        self.norm = eqx.nn.LayerNorm(64)
        self.linear = eqx.nn.Linear(64, 32, key=k2)
        self.mlp = eqx.nn.MLP(32, CLASSES, width_size=16, depth=2, activation=jax.nn.gelu, key=k3)

    def __call__(self, x):  # x: [1, 8, 8], one example
        h = jax.nn.relu(self.conv(x))
        h = self.pool(h).reshape(-1)
        h = jnp.tanh(self.linear(self.norm(h)))
        return self.mlp(h)


WEIGHT_NAMES = {
    ".conv.weight": ("conv_out", "channel", "kh", "kw"), ".conv.bias": ("conv_out", None, None),
    ".norm.weight": ("hidden",), ".norm.bias": ("hidden",),
    ".linear.weight": ("feature", "hidden"), ".linear.bias": ("feature",),
    ".mlp.layers[0].weight": ("mlp0", "feature"), ".mlp.layers[0].bias": ("mlp0",),
    ".mlp.layers[1].weight": ("mlp1", "mlp0"), ".mlp.layers[1].bias": ("mlp1",),
    ".mlp.layers[2].weight": ("classes", "mlp1"), ".mlp.layers[2].bias": ("classes",),
}
X_NAMES = ("batch", "channel", "height", "width")


def leaf_names(path, leaf):
    return WEIGHT_NAMES[jax.tree_util.keystr(path)] if eqx.is_array(leaf) else None


def forward(model, x):
    return jax.vmap(model)(x)


def loss(model, x, y):
    logp = jax.nn.log_softmax(jax.vmap(model)(x))
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def value_and_grad(model, x, y):
    return eqx.filter_value_and_grad(loss)(model, x, y)


def sgd_step(model, x, y):
    value, grads = eqx.filter_value_and_grad(loss)(model, x, y)
    return eqx.apply_updates(model, jax.tree_util.tree_map(lambda g: -0.1 * g, grads)), value


@pytest.fixture(scope="module")
def setup():
    model = Net(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (BATCH, 1, 8, 8))
    y = jax.random.randint(jax.random.key(2), (BATCH,), 0, CLASSES)
    model_axes = jax.tree_util.tree_map_with_path(leaf_names, model)
    return model, x, y, model_axes


def test_non_array_leaves_get_none(setup):
    model, _, _, model_axes = setup
    leaves = jax.tree_util.tree_leaves(model)
    assert any(callable(l) for l in leaves)  # the activation functions and the pool's operation
    flat_axes = jax.tree_util.tree_structure(model).flatten_up_to(model_axes)
    for leaf, names in zip(leaves, flat_axes):
        assert (names is None) == (not eqx.is_array(leaf)), (leaf, names)


@pytest.fixture(scope="module")
def jit_forward():
    return eqx.filter_jit(forward)


@pytest.fixture(scope="module")
def nx_forward(setup):
    return nx.namedjit(forward, in_axes=(setup[3], X_NAMES))


def test_forward_matches_filter_jit(setup, jit_forward, nx_forward):
    model, x, _, _ = setup
    got = nx_forward(model, x)
    assert got.shape == (BATCH, CLASSES)
    report("equinox forward", max_abs_diff=assert_trees_close(got, jit_forward(model, x)))


def test_forward_backward_matches(setup):
    model, x, y, model_axes = setup
    want = eqx.filter_jit(value_and_grad)(model, x, y)
    got = nx.namedjit(value_and_grad, in_axes=(model_axes, X_NAMES, ("batch",)))(model, x, y)
    report("equinox forward+backward", max_abs_diff=assert_trees_close(got, want))


def test_data_parallel_places_the_batch(setup, jit_forward):
    model, x, _, model_axes = setup
    mesh = jax.make_mesh((8, 1), ("data", "model"))
    f = nx.namedjit(forward, in_axes=(model_axes, X_NAMES), axis_resources={"batch": "data"}, mesh=mesh)
    got = f(model, x)
    assert got.sharding.spec == P("data", None)
    assert_trees_close(got, jit_forward(model, x))


def test_weight_names_shard_gradients(setup):
    """The in_axes pytree reaches the weights: ``feature -> model`` shards the linear
    layer's gradient along its output dim, ``batch -> data`` the batch."""
    model, x, y, model_axes = setup
    mesh = jax.make_mesh((4, 2), ("data", "model"))
    f = nx.namedjit(value_and_grad, in_axes=(model_axes, X_NAMES, ("batch",)),
                    axis_resources={"batch": "data", "feature": "model"}, mesh=mesh)
    value, grads = f(model, x, y)
    assert grads.linear.weight.sharding.spec == P("model", None)
    assert grads.linear.bias.sharding.spec == P("model")
    assert grads.mlp.layers[0].weight.sharding.spec == P(None, "model")
    assert_trees_close((value, grads), eqx.filter_jit(value_and_grad)(model, x, y))


def test_donation_is_applied(setup):
    model, x, y, model_axes = setup
    want = eqx.filter_jit(sgd_step)(model, x, y)
    donated = fresh_copy(model)
    f = nx.namedjit(sgd_step, in_axes=(model_axes, X_NAMES, ("batch",)), donate_argnums=(0,))
    with strict_warnings():  # no "donated buffers were not usable"
        got = f(donated, x, y)
    assert all(l.is_deleted() for l in jax.tree_util.tree_leaves(eqx.filter(donated, eqx.is_array)))
    assert not x.is_deleted() and not model.linear.weight.is_deleted()
    assert_trees_close(eqx.filter(got, eqx.is_array), eqx.filter(want, eqx.is_array))
    assert got[0].mlp.activation is model.mlp.activation  # static leaves come back as they were


def test_lower_infer_names_and_dump_on_the_same_call(setup, jit_forward):
    model, x, _, model_axes = setup
    in_axes = (model_axes, X_NAMES)
    mesh = jax.make_mesh((8, 1), ("data", "model"))
    f = nx.namedjit(forward, in_axes=in_axes, axis_resources={"batch": "data"}, mesh=mesh)
    lowered = f.lower(model, x)
    text = lowered.as_text()
    assert "batch" in text and "classes" in text  # the annotated module carries the names
    compiled = lowered.compile()
    got = compiled(model, x)
    assert_trees_close(got, jit_forward(model, x))
    assert collective_counts(compiled.as_text()) == {}  # pure data parallelism of a forward pass

    names = nx.infer_names(forward, model, x, in_axes=in_axes)
    assert names.out_names == [("batch", "classes")]
    named, total = names.dim_coverage()
    dumped = nx.dump(forward, model, x, in_axes=in_axes, axis_resources={"batch": "data"}, mesh=mesh)
    assert {"jaxpr", "names", "sharding", "stablehlo", "hlo"} <= set(dumped.stages)
    assert dumped.summary.values > 0 and dumped.summary.fully_named > 0
    assert dumped.summary.collectives == {}

    bwd = nx.infer_names(value_and_grad, model, x, jnp.zeros((BATCH,), jnp.int32),
                         in_axes=(model_axes, X_NAMES, ("batch",)))
    bwd_named, bwd_total = bwd.dim_coverage()
    report("equinox named dims", forward=f"{named}/{total}={named / total:.3f}",
           forward_backward=f"{bwd_named}/{bwd_total}={bwd_named / bwd_total:.3f}",
           unknown_primitives={**names.unknown_primitives, **bwd.unknown_primitives})


# --- LoRA and int4 on the Linear weights ------------------------------------------------


def _is_lora(x) -> bool:
    return isinstance(x, qax.LoraWeight)


def test_lora_on_linear_weights(setup, jit_forward, nx_forward):
    model, x, _, _ = setup
    lora = qax.lora.wrap(model, rank=2, key=jax.random.key(3))  # the 2-D float arrays: the Linear weights
    assert len(qax.lora.factors(lora)) == 4
    with strict_warnings():
        got_zero = nx_forward(lora, x)
    assert_trees_close(got_zero, jit_forward(model, x))
    keys = iter(jax.random.split(jax.random.key(4), 8))
    lora = jax.tree_util.tree_map(
        lambda l: qax.LoraWeight(l.w, l.a, jax.random.normal(next(keys), l.b.shape), alpha=l.alpha)
        if _is_lora(l) else l, lora, is_leaf=_is_lora)
    with strict_warnings():
        got = nx_forward(lora, x)
    want = jit_forward(qax.lora.merge(lora), x)
    assert not np.allclose(want, jit_forward(model, x), atol=1e-3)
    report("equinox lora vs merged", max_abs_diff=assert_trees_close(got, want))


def test_int4_on_linear_weights(setup, jit_forward, nx_forward):
    model, x, _, _ = setup
    q = qax.int4.quantize(model, group_size=16, in_axis=1)  # eqx Linear weights are (out, in)
    assert sum(isinstance(l, qax.Int4Weight) for l in jax.tree_util.tree_leaves(
        q, is_leaf=lambda l: isinstance(l, qax.Int4Weight))) == 4
    with strict_warnings():
        got = nx_forward(q, x)
    want = jit_forward(qax.int4.dequantize(q), x)
    report("equinox int4 vs dequantized", max_abs_diff=assert_trees_close(got, want))
