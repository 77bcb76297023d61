"""A transformers GPT-2 checkpoint into namax and back, with the same logits both ways.

Everything is made locally: a randomly initialised small ``FlaxGPT2LMHeadModel`` (torch is
not needed) saved with ``save_pretrained``.
"""

import json
import pathlib
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import namax as nx
from namax.models import gpt2

transformers = pytest.importorskip("transformers")

CONFIG = dict(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=4)


@pytest.fixture(scope="module")
def hf_source(tmp_path_factory):
    """A random FlaxGPT2LMHeadModel saved (Flax-layout safetensors), its params and its logits on fixed tokens."""
    config = transformers.GPT2Config(**CONFIG)
    model = transformers.FlaxGPT2LMHeadModel(config, _do_init=False)
    params = jax.eval_shape(lambda k: model.init_weights(k, (1, 1)), jax.random.key(0))
    rng = np.random.default_rng(0)
    # random weights (not the init's zeros/ones) so every parameter matters for the logits
    params = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(0, 0.2, s.shape).astype(np.float32)), params)
    folder = tmp_path_factory.mktemp("hf_flax")
    model.save_pretrained(folder, params=params, safe_serialization=True)
    ids = rng.integers(0, CONFIG["vocab_size"], size=(2, 16))
    logits = np.asarray(model(ids, params=params).logits)
    return folder, ids, logits, model


def _namax_logits(model, ids):
    named_ids = nx.named(jnp.asarray(ids, dtype=jnp.int32), ("batch", "position"))
    return np.asarray(model(named_ids).rearrange(("batch", "position", "vocab")).array)


def test_flax_checkpoint_is_what_we_think(hf_source):
    folder = hf_source[0]
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "numpy") as f:
        assert f.metadata()["format"] == "flax"
        assert f.get_slice("transformer.h.0.attn.c_attn.kernel").get_shape() == [96, 32]  # Flax: [out, in]


def test_import_gives_transformers_logits(hf_source):
    folder, ids, logits, _ = hf_source
    model = gpt2.from_hf(folder)
    assert model.config.n_embd == CONFIG["n_embd"] and model.config.n_layer == CONFIG["n_layer"]
    diff = np.abs(_namax_logits(model, ids) - logits).max()
    print(f"max |namax - transformers| logits (import): {diff:.3g}")
    assert diff <= 1e-4


def test_export_loads_in_transformers_with_the_same_logits(hf_source, tmp_path):
    folder, ids, logits, _ = hf_source
    model = gpt2.from_hf(folder)
    gpt2.to_hf(model, tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "numpy") as f:  # torch layout: Conv1D [in, out]
        assert f.metadata()["format"] == "pt"
        assert f.get_slice("transformer.h.0.attn.c_attn.weight").get_shape() == [32, 96]
        assert "transformer.wte.weight" in f.keys() and "lm_head.weight" not in f.keys()
    # format "pt": transformers' Flax class converts it without torch
    reloaded = transformers.FlaxGPT2LMHeadModel.from_pretrained(tmp_path)
    exported = np.asarray(reloaded(ids).logits)
    diff = np.abs(exported - logits).max()
    print(f"max |transformers(export) - transformers(source)| logits: {diff:.3g}")
    assert diff <= 1e-4
    # and namax reads its own torch-layout export back exactly
    again = gpt2.from_hf(tmp_path)
    for a, b in zip(jax.tree_util.tree_leaves(again), jax.tree_util.tree_leaves(model)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_unprefixed_torch_keys_and_a_sharded_import(hf_source, tmp_path):
    folder, ids, logits, _ = hf_source
    model = gpt2.from_hf(folder)
    gpt2.to_hf(model, tmp_path, prefix=None)  # GPT2Model keys: h.0.attn.c_attn.weight, wte.weight, ...
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "numpy") as f:
        assert "h.0.attn.c_attn.weight" in f.keys() and "wte.weight" in f.keys()
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    sharded = gpt2.from_hf(tmp_path, mapping={"heads": "model", "mlp": "model", "embed": "data"}, mesh=mesh)
    c_attn = sharded.transformer.h.stacked.attn.c_attn.weight
    assert c_attn.array.sharding.spec == nx.partitioning.sharding_for(
        c_attn, {"heads": "model", "mlp": "model", "embed": "data"}, mesh).spec
    assert np.abs(_namax_logits(sharded, ids) - logits).max() <= 1e-4


def test_config_errors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "activation_function": "relu"}))
    with pytest.raises(ValueError, match="activation_function='relu' is not implemented"):
        gpt2.from_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", **CONFIG}))
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        gpt2.from_hf(tmp_path)


def test_a_wrong_shape_names_the_key(hf_source, tmp_path):
    folder = hf_source[0]
    model = gpt2.from_hf(folder)
    gpt2.to_hf(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["n_inner"] = 64  # the checkpoint's MLP has 128
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"state dict key 'h\.0\.mlp\.c_fc\.weight'.*\(32, 128\)"):
        gpt2.from_hf(tmp_path)


def test_import_into_the_training_demos_gpt(hf_source):
    """``from_hf_into`` fills ``examples/gpt.py``'s GPT (other field names, same axis names) by name."""
    folder, ids, logits, _ = hf_source
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))
    try:
        from gpt import GPT, GPTConfig
    finally:
        sys.path.pop(0)
    seq_len = ids.shape[1]
    config = GPTConfig(seq_len=seq_len, embed=CONFIG["n_embd"], heads=CONFIG["n_head"], layers=CONFIG["n_layer"],
                       vocab=CONFIG["vocab_size"])
    template = eqx.filter_eval_shape(GPT.init, config, key=jax.random.key(0))
    demo = gpt2.from_hf_into(template, folder, positions=seq_len)
    diff = np.abs(_namax_logits(demo, ids) - logits).max()
    print(f"max |examples GPT - transformers| logits: {diff:.3g}")
    assert diff <= 1e-4
    with pytest.raises(ValueError, match=r"key 'pos_embed\.weight'.*shape \(64, 32\)"):
        gpt2.from_hf_into(template, folder)  # all 64 positions for a 16-position model
