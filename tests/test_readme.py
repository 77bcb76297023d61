"""The README's Python blocks run as written, in order, and say what the README says they give."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import namax as nx

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.S)


@pytest.fixture(scope="module")
def readme() -> dict:
    """Every block executed in one namespace, in README order, as a reader would paste them."""
    ns: dict = {}
    for block in python_blocks():
        exec(block, ns)
    return ns


def _spec(x) -> tuple:
    spec = tuple(x.sharding.spec)
    while spec and spec[-1] is None:
        spec = spec[:-1]
    return spec


def test_named_tensor_example_runs_and_its_comments_hold(readme):
    assert tuple(a.name for a in readme["scores"].axes) == ("position", "head", "key_position")
    assert tuple(a.name for a in readme["probs"]["position", 3].axes) == ("head", "key_position")
    # causal: position 3 puts no weight on later key positions
    row = np.asarray(readme["probs"]["position", 3].array)
    np.testing.assert_allclose(row[:, 4:], 0.0)
    np.testing.assert_allclose(row.sum(-1), 1.0, rtol=1e-5)


def _plain_step(ns, params, x):
    """The README's train_step under plain jax.jit on single-device copies of its inputs."""
    plain = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a)), (params, x))
    return jax.jit(ns["train_step"])(*plain)


def test_tp_and_fsdp_examples_place_by_name_and_match_jax_jit(readme):
    ns = readme
    assert _spec(ns["new"]["w1"].array) == (None, "model")
    # the same step, re-run on fresh parameters: equal to plain jax.jit, with and without a mesh context
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    Batch, Embed, Mlp = ns["Batch"], ns["Embed"], ns["Mlp"]
    params = {"norm": nx.ones(Embed), "w1": nx.random.normal(k1, (Embed, Mlp)) * 0.1,
              "w2": nx.random.normal(k2, (Mlp, Embed)) * 0.1}
    x = nx.random.normal(k3, (Batch, Embed))  # the README's x (a later block reuses the name)
    want_loss, want = _plain_step(ns, params, x)
    loss, got = ns["step"](nx.shard(params, {"embed": "data"}, ns["mesh"]), x)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    for k in want:
        np.testing.assert_allclose(got[k].array, want[k].array, rtol=1e-5, atol=1e-6)
        assert got[k].axes == want[k].axes
    assert _spec(got["w1"].array) == ("data",) and _spec(got["w2"].array) == (None, "data")


def test_plain_code_example_returns_plain_arrays_placed_by_name(readme):
    ns = readme
    out = ns["f"](ns["x"], ns["w1"], ns["w2"])
    assert isinstance(out, jax.Array) and not isinstance(out, nx.NamedArray)
    assert _spec(out) == ("data",)
    np.testing.assert_allclose(out, ns["mlp"](ns["x"], ns["w1"], ns["w2"]), rtol=1e-5)
    named = nx.namedjit(ns["mlp"], in_axes=ns["names"], out_axes="infer")(ns["x"], ns["w1"], ns["w2"])
    assert named.axis_names == ("batch", "embed")


def test_implicit_example_trains_only_lora_factors_and_int4_matches_dense(readme):
    ns = readme
    lw = ns["lora_params"]["w1"]
    upd = ns["updates"]["w1"]
    assert np.abs(np.asarray(upd.a)).max() > 0 or np.abs(np.asarray(upd.b)).max() > 0
    np.testing.assert_array_equal(np.asarray(upd.w), 0.0)
    dense = {k: v.materialize() for k, v in ns["int4_params"].items()}
    np.testing.assert_allclose(ns["loss"], ns["mlp_loss"](dense, ns["x"]), rtol=1e-5)
    assert lw.w.shape == (32, 64)


def test_plan_example_picks_by_name_and_times_with_calibrated_constants(readme):
    assert readme["planned"].mapping == {"batch": "data"}
    assert readme["tight"].mapping == {"mlp": "data"}
    timed = readme["timed"]
    measured = [c for c in timed.table if c.measured is not None]
    assert len(measured) == 2 and timed.best is measured[0] and measured[0].measured <= measured[1].measured
    assert timed.cost_model.link_bw != readme["CostModel"]().link_bw  # timed on the 8-device mesh
