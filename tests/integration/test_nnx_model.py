"""An unmodified Flax NNX CNN (``nnx.Conv``, ``nnx.relu``, ``nnx.max_pool``, ``nnx.Linear``)
under namedjit, as a pure function of its split state: ``nnx.merge(graphdef, state)(x)``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

import namax as nx

from .helpers import assert_trees_close, report

BATCH, CLASSES = 8, 10
STATE_NAMES = {
    "conv": {"kernel": ("kh", "kw", "channel", "conv_out"), "bias": ("conv_out",)},
    "linear": {"kernel": ("hidden", "classes"), "bias": ("classes",)},
}
X_NAMES = ("batch", "height", "width", "channel")


class CNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 4, kernel_size=(3, 3), rngs=rngs)
        self.linear = nnx.Linear(64, CLASSES, rngs=rngs)

    def __call__(self, x):  # x: [batch, 8, 8, 1]
        h = nnx.relu(self.conv(x))
        h = nnx.max_pool(h, (2, 2), strides=(2, 2))
        return self.linear(h.reshape(h.shape[0], -1))


@pytest.fixture(scope="module")
def setup():
    graphdef, state = nnx.split(CNN(nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(1), (BATCH, 8, 8, 1))

    def names(path, leaf):
        module, kind = (getattr(k, "key", None) for k in path[:2])
        return STATE_NAMES[module][kind]

    state_axes = jax.tree_util.tree_map_with_path(names, state)

    def forward(state, x):
        return nnx.merge(graphdef, state)(x)

    def loss(state, x):
        return jnp.mean(forward(state, x) ** 2)

    return state, x, (state_axes, X_NAMES), forward, jax.value_and_grad(loss)


def test_forward_matches_jit(setup):
    state, x, in_axes, forward, _ = setup
    got = nx.namedjit(forward, in_axes=in_axes)(state, x)
    assert got.shape == (BATCH, CLASSES)
    report("nnx forward", max_abs_diff=assert_trees_close(got, jax.jit(forward)(state, x)))


def test_forward_backward_matches_jit(setup):
    state, x, in_axes, _, value_and_grad = setup
    got = nx.namedjit(value_and_grad, in_axes=in_axes)(state, x)
    want = jax.jit(value_and_grad)(state, x)
    assert isinstance(got[1], nnx.State)
    report("nnx forward+backward", max_abs_diff=assert_trees_close(got, want))


def test_names(setup):
    state, x, in_axes, forward, value_and_grad = setup
    fwd = nx.infer_names(forward, state, x, in_axes=in_axes)
    assert fwd.out_names == [("batch", "classes")]
    bwd = nx.infer_names(value_and_grad, state, x, in_axes=in_axes)
    state_names = jax.tree_util.tree_leaves(in_axes[0], is_leaf=lambda n: isinstance(n, tuple))
    assert bwd.out_names == [()] + state_names  # each gradient carries its parameter's names
    (fn, ft), (bn, bt) = fwd.dim_coverage(), bwd.dim_coverage()
    report("nnx named dims", forward=f"{fn}/{ft}={fn / ft:.3f}", forward_backward=f"{bn}/{bt}={bn / bt:.3f}")


def test_data_parallel_places_the_batch(setup):
    state, x, in_axes, forward, _ = setup
    mesh = jax.make_mesh((8, 1), ("data", "model"))
    got = nx.namedjit(forward, in_axes=in_axes, axis_resources={"batch": "data"}, mesh=mesh)(state, x)
    assert got.sharding.spec == P("data", None)
    assert_trees_close(got, jax.jit(forward)(state, x))


def test_tensor_parallel_shards_the_conv_gradient(setup):
    state, x, in_axes, _, value_and_grad = setup
    mesh = jax.make_mesh((4, 2), ("data", "model"))
    f = nx.namedjit(value_and_grad, in_axes=in_axes, axis_resources={"batch": "data", "conv_out": "model"}, mesh=mesh)
    value, grads = f(state, x)
    assert grads["conv"]["kernel"].get_value().sharding.spec == P(None, None, None, "model")
    assert grads["conv"]["bias"].get_value().sharding.spec == P("model")
    assert_trees_close((value, grads), jax.jit(value_and_grad)(state, x))
