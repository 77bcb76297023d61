"""Training the named GPT (examples/train_lm.py): loss goes down, checkpoints round-trip,
resume is bitwise identical, FSDP / tensor-parallel runs give the single-device losses, and
the LoRA fine-tune (examples/lora_finetune.py) runs under namedjit without forming a b^T."""

import dataclasses
import pathlib
import shutil
import sys

import equinox as eqx
import jax
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))

import namax as nx  # noqa: E402
from namax import checkpoint  # noqa: E402
import namax.quant as qax  # noqa: E402
from gpt import loss_fn  # noqa: E402
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
    assert meta["config"]["steps"] == 6 and meta["config"]["learning_rate"] == 1e-2  # the run's settings
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


def test_stop_at_then_resume_matches_the_uninterrupted_run(reference, tmp_path):
    opts, result = reference
    first = train(dataclasses.replace(opts, checkpoint_dir=str(tmp_path), stop_at=2), log=_quiet)
    assert sorted(first.losses) == [0, 1]
    assert (tmp_path / "step_000002.safetensors").exists()  # checkpointed where it stopped
    resumed = train(dataclasses.replace(opts, checkpoint_dir=str(tmp_path), resume=True), log=_quiet)
    assert sorted(resumed.losses) == list(range(2, opts.steps))
    for step in range(opts.steps):
        got = first.losses[step] if step < 2 else resumed.losses[step]
        assert got == result.losses[step], step  # bitwise
    # a fresh run clears the older step files
    train(dataclasses.replace(opts, checkpoint_dir=str(tmp_path), stop_at=1, checkpoint_every=0), log=_quiet)
    assert not list(tmp_path.glob("step_*.safetensors"))


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
    opts = parse_args(["--resume", "--allow-config-change", "steps,--learning-rate, seed", "--keep-checkpoints", "0"])
    assert opts.allow_config_change == ("steps", "learning_rate", "seed") and opts.keep_checkpoints == 0


def test_cli_rejects_unknown_allow_config_change(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--allow-config-change", "steps,stepz"])
    assert "--allow-config-change: unknown option(s) stepz (choose from steps, batch-size" in capsys.readouterr().err


def _dot_shapes(jaxpr) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Operand shapes of every dot_general in ``jaxpr`` and the jaxprs nested in its equations."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            out.append(tuple(tuple(v.aval.shape) for v in eqn.invars))
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    out.extend(_dot_shapes(sub.jaxpr))
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    out.extend(_dot_shapes(sub))
    return out


def _full_deltas(jaxpr, factor) -> list:
    """The dot_generals multiplying a LoRA factor ``a`` by ``b`` (either layout, per layer or stacked)."""
    pairs = {(tuple(sorted(a)), tuple(sorted(b))) for a, b in
             ((factor.a.shape, factor.b.shape), (factor.a.shape[1:], factor.b.shape[1:]))}
    pairs |= {(b, a) for a, b in pairs}
    return [s for s in _dot_shapes(jaxpr) if (tuple(sorted(s[0])), tuple(sorted(s[1]))) in pairs]


def _merged_loss(static, lora_params, inputs, targets):
    """The loss with every LoRA weight materialized (``w + a b^T``): what the handlers avoid."""
    return loss_fn(eqx.combine(qax.lora.merge(lora_params), static), inputs, targets)


def test_lora_finetune_under_namedjit(reference, tmp_path):
    from lora_finetune import _is_mlp_weight, finetune, lora_loss, make_lora_step, make_optimizer
    from train_lm import axis_mappings, global_batch, load_model, make_mesh

    opts, _ = reference
    base = tmp_path / "base"
    base.mkdir()
    shutil.copy(checkpoint.latest(opts.checkpoint_dir), base)
    lora_opts = dataclasses.replace(opts, checkpoint_dir=str(base), devices=8, lora=True, lora_rank=3, lora_steps=4,
                                    eval_batches=1)

    # the compiled step: data parallel over 8 devices, and a b^T is never formed
    model, _ = load_model(lora_opts)
    params, static = eqx.partition(model, eqx.is_array)
    lora_params = qax.lora.wrap(params, 3, jax.random.key(0), where=_is_mlp_weight)
    mesh = make_mesh(lora_opts)
    compute_map, param_map = axis_mappings(lora_opts)
    optimizer = make_optimizer(1e-3, 4)
    step = make_lora_step(static, optimizer, mesh, compute_map, param_map)
    shape = (lora_opts.batch_size, lora_opts.seq_len)
    ids = np.zeros(shape, np.int32)
    inputs, targets = global_batch(lambda rows: (ids[rows], ids[rows]), shape, mesh, compute_map)
    factor = qax.lora.factors(lora_params)[0]
    jaxpr = step.trace(lora_params, optimizer.init(lora_params), inputs, targets).jaxpr.jaxpr
    assert any(factor.a.shape[1:] in s or factor.b.shape[1:] in s for s in _dot_shapes(jaxpr))  # the factors are used
    assert _full_deltas(jaxpr, factor) == []
    merged = jax.make_jaxpr(lambda p, x, y: _merged_loss(static, p, x, y))(lora_params, inputs, targets).jaxpr
    assert _full_deltas(merged, factor) != []  # the check does see a materialized a b^T
    _, _, loss = step(lora_params, optimizer.init(lora_params), inputs, targets)
    assert inputs.array.sharding.spec[0] == "data" and len(inputs.array.sharding.device_set) == 8
    np.testing.assert_allclose(float(loss), float(jax.jit(lora_loss(static))(lora_params, inputs, targets)), rtol=1e-6)

    # the whole fine-tune: held-out loss goes down, base weights stay, only the factors are saved
    out = finetune(lora_opts)
    assert out["after"] < out["before"] and out["frozen_same"]
    meta = checkpoint.read_metadata(out["path"])
    assert meta["extra"]["kind"] == "lora" and meta["extra"]["rank"] == 3
    step_, trees, _ = checkpoint.load(out["path"], {"lora_a": [f.a for f in qax.lora.factors(lora_params)],
                                                    "lora_b": [f.b for f in qax.lora.factors(lora_params)]})
    assert step_ == 4 and all(float(np.abs(b).max()) > 0 for b in trees["lora_b"])  # b started at zero



def test_init_from_hf_starts_from_the_transformers_weights(tmp_path):
    """``--init-from-hf DIR``: the demo's GPT takes a transformers GPT-2's weights by axis name
    and its shape from the config; with a zero learning rate they come out of training unchanged."""
    transformers = pytest.importorskip("transformers")
    from namax.models import gpt2

    hf_config = transformers.GPT2Config(vocab_size=256, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    model = transformers.FlaxGPT2LMHeadModel(hf_config, _do_init=False)
    params = model.init_weights(jax.random.key(3), (1, 1))
    model.save_pretrained(tmp_path / "hf", params=params, safe_serialization=True)
    opts = dataclasses.replace(TINY, steps=1, learning_rate=0.0, weight_decay=0.0, checkpoint_every=0,
                               checkpoint_dir=str(tmp_path / "ckpt"), init_from_hf=str(tmp_path / "hf"))
    result = train(opts, log=_quiet)
    assert len(result.losses) == 1 and all(np.isfinite(v) for v in result.losses.values())
    hf = gpt2.hf_state_dict(tmp_path / "hf", positions=TINY.seq_len)
    wte = next(v for k, v in hf.items() if k.endswith("wte.weight"))
    emb = result.params.token_embed.weight
    assert emb.axis_names == wte.axis_names and emb.array.shape == wte.shape == (256, 16)
    np.testing.assert_array_equal(np.asarray(emb.array), wte[:, :])
    assert parse_args(["--init-from-hf", "D"]).init_from_hf == "D"
    small = transformers.GPT2Config(vocab_size=100, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    transformers.FlaxGPT2LMHeadModel(small, _do_init=False).save_pretrained(
        tmp_path / "v100", params=transformers.FlaxGPT2LMHeadModel(small, _do_init=False).init_weights(
            jax.random.key(0), (1, 1)), safe_serialization=True)
    with pytest.raises(ValueError, match=r"vocab_size 100, but the demo reads bytes \(vocab 256\)"):
        train(dataclasses.replace(opts, init_from_hf=str(tmp_path / "v100")), log=_quiet)
