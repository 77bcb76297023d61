"""Training the named GPT (examples/train_lm.py): loss goes down, checkpoints round-trip,
resume is bitwise identical, and FSDP / tensor-parallel runs give the single-device losses."""

import dataclasses
import pathlib
import shutil
import sys

import equinox as eqx
import jax
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))

import checkpoint  # noqa: E402
import namax as nx  # noqa: E402
from train_lm import TrainOptions, parse_args, train  # noqa: E402

TINY = TrainOptions(steps=6, batch_size=8, seq_len=16, embed=32, heads=4, layers=2, learning_rate=1e-2, warmup=2,
                    eval_every=0, checkpoint_every=3, progress=False, devices=1)


def _quiet(*_):
    pass


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted single-device run, checkpointing at steps 3 and 6."""
    ckpt = tmp_path_factory.mktemp("ref")
    opts = dataclasses.replace(TINY, checkpoint_dir=str(ckpt))
    return opts, train(opts, log=_quiet)


def test_training_lowers_the_loss(reference):
    _, result = reference
    losses = [result.losses[s] for s in range(TINY.steps)]
    assert losses[0] == pytest.approx(np.log(256), abs=0.3)  # uniform over bytes at init
    assert losses[-1] < losses[0] - 0.5


def test_checkpoint_round_trip_keeps_values_and_axis_names(reference):
    opts, result = reference
    path = checkpoint.latest(opts.checkpoint_dir)
    assert path.name == "step_000006.safetensors"
    step, trees, meta = checkpoint.load(path, {"params": result.params})
    assert step == 6 and meta["extra"]["config"]["embed"] == 32
    w = trees["params"].blocks.stacked.attn.qkv.weight
    assert meta["axes"]["params/.blocks.stacked.attn.qkv.weight"] == list(w.axis_names)
    assert "layers" in w.axis_names
    for a, b in zip(jax.tree_util.tree_leaves(trees["params"]), jax.tree_util.tree_leaves(result.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_checkpoint_rejects_mismatched_template(reference):
    opts, result = reference
    path = checkpoint.latest(opts.checkpoint_dir)
    with pytest.raises(ValueError, match=r"no tensor \"params/\['lm'\]\""):
        checkpoint.load(path, {"params": {"lm": nx.ones(nx.Axis("embed", 32))}})
    resized = eqx.tree_at(lambda p: p.ln_f.weight, result.params, nx.ones(nx.Axis("embed", 7)))
    with pytest.raises(ValueError, match=r"ln_f.weight' is float32\[32\], the template wants float32\[7\]"):
        checkpoint.load(path, {"params": resized})
    renamed = eqx.tree_at(lambda p: p.ln_f.weight, result.params, nx.ones(nx.Axis("hidden", 32)))
    with pytest.raises(ValueError, match=r"has axes \['embed'\], the template wants \['hidden'\]"):
        checkpoint.load(path, {"params": renamed})


def test_resume_is_bitwise_identical(reference, tmp_path):
    opts, result = reference
    shutil.copy(pathlib.Path(opts.checkpoint_dir) / "step_000003.safetensors", tmp_path)
    resumed = train(dataclasses.replace(opts, checkpoint_dir=str(tmp_path), resume=True), log=_quiet)
    assert sorted(resumed.losses) == [3, 4, 5]
    for step in (3, 4, 5):
        assert resumed.losses[step] == result.losses[step], step  # bitwise, not approximately
    for a, b in zip(jax.tree_util.tree_leaves(resumed.params), jax.tree_util.tree_leaves(result.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("fsdp, tp", [(True, 1), (True, 2)])
def test_sharded_runs_match_single_device(reference, tmp_path, fsdp, tp):
    opts, result = reference
    sharded = train(dataclasses.replace(opts, devices=8, fsdp=fsdp, tp=tp, checkpoint_every=0,
                                        checkpoint_dir=str(tmp_path)), log=_quiet)
    np.testing.assert_allclose([sharded.losses[s] for s in range(opts.steps)],
                               [result.losses[s] for s in range(opts.steps)], rtol=2e-5)
    w = sharded.params.blocks.stacked.mlp.layers[0].weight
    spec = dict(zip(w.axis_names, w.array.sharding.spec))
    assert spec.get("embed") == "data"
    assert spec.get("mlp") == ("model" if tp > 1 else None)


def test_cli_parses_flags():
    opts = parse_args(["--steps", "7", "--fsdp", "--tp", "2", "--sample", "ROMEO:", "--temperature", "0"])
    assert (opts.steps, opts.fsdp, opts.tp, opts.sample, opts.temperature) == (7, True, 2, "ROMEO:", 0.0)
    with pytest.raises(SystemExit):
        parse_args(["--tp", "0"])
