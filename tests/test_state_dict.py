"""namax.state_dict: keys, layouts, files, restores onto meshes by name, torch layouts, errors."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

import namax as nx
import namax.nn as nn
from namax import state_dict as sdm

Layers, Embed, Heads, HeadSize, Mlp = nx.make_axes(layers=2, embed=8, heads=4, head_size=2, mlp=16)


class Block(eqx.Module):
    attn: nn.Linear
    ln: nn.LayerNorm

    @staticmethod
    def init(*, key, out_first=None):
        return Block(nn.Linear.init(Embed, (Heads, HeadSize), key=key, out_first=out_first), nn.LayerNorm.init(Embed))


class Model(eqx.Module):
    embed: nn.Embedding
    blocks: nn.Stacked
    head: nn.Linear
    extras: dict

    @staticmethod
    def init(key, out_first=None):
        k1, k2, k3 = jax.random.split(key, 3)
        return Model(nn.Embedding.init(nx.Axis("vocab", 8), Embed, key=k1),
                     nn.Stacked.init(Layers, Block)(key=k2, out_first=out_first),
                     nn.Linear.init((Heads, HeadSize), Mlp, key=k3, out_first=out_first),
                     {"scale": jnp.arange(3.0), "norms": [nn.LayerNorm.init(Mlp)]})


def _randomize(tree, seed=0):
    """Every array leaf random (so a misplaced value shows)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


def _assert_same_by_name(a, b):
    """Every NamedArray of ``a`` equals ``b``'s, compared by axis name (any storage order)."""
    la = jax.tree_util.tree_leaves(a, is_leaf=nx.is_named)
    lb = jax.tree_util.tree_leaves(b, is_leaf=nx.is_named)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if isinstance(x, nx.NamedArray):
            assert set(x.axis_names) == set(y.axis_names)
            np.testing.assert_array_equal(np.asarray(x.array), np.asarray(y.rearrange(x.axis_names).array))
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def model():
    return _randomize(Model.init(jax.random.key(0), out_first=True))


@pytest.fixture(scope="module")
def other_layout_template():
    # the other storage order for every Linear, and abstract (no memory): eqx.filter_eval_shape
    return eqx.filter_eval_shape(Model.init, jax.random.key(1), out_first=False)


def test_keys_follow_fields_layers_and_containers(model):
    sd = sdm.to_state_dict(model, prefix="m")
    want = {"m.embed.weight", "m.head.weight", "m.head.bias", "m.extras.scale", "m.extras.norms.0.weight",
            "m.extras.norms.0.bias"}
    for i in range(Layers.size):
        want |= {f"m.blocks.{i}.attn.weight", f"m.blocks.{i}.attn.bias", f"m.blocks.{i}.ln.weight",
                 f"m.blocks.{i}.ln.bias"}
    assert set(sd) == want
    layer1 = sd["m.blocks.1.attn.weight"]
    assert not layer1.has_axis("layers")
    np.testing.assert_array_equal(layer1.array, model.blocks.stacked.attn.weight["layers", 1].array)


def test_round_trip_into_another_storage_layout(model, other_layout_template):
    assert model.head.weight.axis_names != other_layout_template.head.weight.axis_names
    back = sdm.from_state_dict(other_layout_template, sdm.to_state_dict(model))
    assert back.head.weight.axis_names == other_layout_template.head.weight.axis_names
    _assert_same_by_name(model, back)


def test_file_round_trip_keeps_names_in_metadata(model, other_layout_template, tmp_path):
    path = tmp_path / "model.safetensors"
    sdm.save_state_dict(sdm.to_state_dict(model), path)
    from safetensors import safe_open

    with safe_open(str(path), "numpy") as f:
        meta = f.metadata()
    assert meta["format"] == "pt"
    assert json.loads(meta[sdm.AXES_METADATA_KEY])["head.weight"] == list(model.head.weight.axis_names)
    _assert_same_by_name(model, sdm.from_state_dict(other_layout_template, sdm.load_state_dict(path)))
    _assert_same_by_name(model, sdm.from_state_dict(other_layout_template, sdm.load_state_dict(path, lazy=True)))


MESH_MAPPINGS = [
    {"embed": ("data", "model")},
    {"embed": "data", "heads": "model"},
    {"heads": "data", "head_size": "model", "vocab": "model"},
    {"layers": "model", "mlp": "data"},
    {},
]


def _mesh():
    return Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))


def _bytes_on_devices(tree):
    """The bytes of every device's block (a block on several devices counted for each)."""
    return sum(s.data.nbytes for x in jax.tree_util.tree_leaves(tree) for s in x.addressable_shards)


def _file_bytes(lazy):
    return sum(np.dtype(t.dtype).itemsize * int(np.prod(t.shape)) for t in lazy.values())


@pytest.mark.parametrize("mapping", MESH_MAPPINGS, ids=lambda m: ",".join(f"{k}:{v}" for k, v in m.items()) or "none")
def test_one_device_to_mesh_and_back_reads_only_blocks(model, other_layout_template, tmp_path, mapping):
    assert len(jax.devices()) >= 8
    path = tmp_path / "one_device.safetensors"
    sdm.save_state_dict(sdm.to_state_dict(model), path)  # saved from one device
    lazy = sdm.load_state_dict(path, lazy=True)
    mesh = _mesh()
    restored = sdm.from_state_dict(other_layout_template, lazy, mapping=mapping, mesh=mesh)
    for leaf in jax.tree_util.tree_leaves(restored, is_leaf=nx.is_named):
        if isinstance(leaf, nx.NamedArray):
            assert leaf.array.sharding == nx.partitioning.sharding_for(leaf, mapping, mesh)
    _assert_same_by_name(model, restored)
    # each device's block was read, and nothing more (jax reads a block replicated on several devices once)
    # (a whole-tensor read per device would read up to 8x the devices' bytes for a fully sharded tensor)
    assert _file_bytes(lazy) <= lazy.bytes_read <= _bytes_on_devices(restored)
    # ... and back: the sharded model saved (gathered) and restored on one device, in the first layout
    back_path = tmp_path / "mesh.safetensors"
    sdm.save_state_dict(sdm.to_state_dict(restored), back_path)
    _assert_same_by_name(model, sdm.from_state_dict(model, sdm.load_state_dict(back_path)))


def test_axis_mapping_context_shards_and_full_sharding_reads_each_byte_once(model, tmp_path):
    path = tmp_path / "m.safetensors"
    sdm.save_state_dict(sdm.to_state_dict(model), path)
    mapping = {"embed": ("data", "model"), "mlp": ("data", "model")}
    with nx.axis_mapping(mapping, mesh=_mesh()):
        restored = sdm.from_state_dict(model, sdm.load_state_dict(path, lazy=True))
    _assert_same_by_name(model, restored)
    # one tensor sharded over all 8 devices: each device reads its eighth, so the file's bytes are read once
    lazy = sdm.load_state_dict(path, lazy=True)
    with nx.axis_mapping(mapping, mesh=_mesh()):
        head = sdm.from_state_dict(model.head, lazy, prefix="head")  # keys outside "head." are not its
    w = head.weight
    assert w.array.sharding.spec == nx.partitioning.sharding_for(w, mapping, _mesh()).spec
    block = tuple(n // 8 if name == "mlp" else n for name, n in w.shape.items())
    assert {s.data.shape for s in w.array.addressable_shards} == {block}
    assert lazy.bytes_read == w.nbytes + head.bias.nbytes


def test_torch_compatible_layouts_and_keys(model):
    sd = sdm.to_torch_compatible_state_dict(model)
    flat_in = Heads.size * HeadSize.size
    assert sd["head.weight"].shape == (Mlp.size, flat_in)  # [out, in], multi-axis In flattened
    assert sd["blocks.1.attn.weight"].shape == (flat_in, Embed.size)  # one key per layer, [out, in]
    assert sd["blocks.1.attn.bias"].shape == (flat_in,)
    # torch's Linear: y = x @ W.T + b, on the flattened axes, equals the namax layer
    x = nx.random.normal(jax.random.key(3), (nx.Axis("batch", 3), Heads, HeadSize))
    torch_y = np.asarray(x.rearrange(("batch", "heads", "head_size")).array).reshape(3, -1) @ np.asarray(
        sd["head.weight"]).T + np.asarray(sd["head.bias"])
    np.testing.assert_allclose(torch_y, np.asarray(model.head(x).rearrange(("batch", "mlp")).array), rtol=1e-5,
                               atol=1e-5)
    assert all(isinstance(v, jax.Array) for v in sd.values())


def test_torch_compatible_round_trip_onto_a_mesh(model, other_layout_template, tmp_path):
    path = tmp_path / "torch.safetensors"
    sdm.save_state_dict(sdm.to_torch_compatible_state_dict(model), path)
    lazy = sdm.load_state_dict(path, lazy=True)
    assert all(t.axis_names is None for t in lazy.values())  # plain torch tensors
    mapping = {"head_size": "model", "heads": "data", "vocab": "model"}  # a non-leading flattened axis split
    restored = sdm.from_torch_compatible_state_dict(other_layout_template, lazy, mapping=mapping, mesh=_mesh())
    _assert_same_by_name(model, restored)
    assert _file_bytes(lazy) <= lazy.bytes_read <= _bytes_on_devices(restored)
    # and in memory, on one device
    _assert_same_by_name(model, sdm.from_torch_compatible_state_dict(model, sdm.to_torch_compatible_state_dict(model)))


def test_flatten_and_unflatten_modules(model):
    flat = sdm.flatten_modules_for_export(model)
    assert flat.head.weight.axis_names == ("mlp", "heads*head_size")
    assert flat.blocks.stacked.attn.weight.axis_names == ("layers", "heads*head_size", "embed")
    _assert_same_by_name(model, sdm.unflatten_modules_from_export(flat, model))


class Proj(sdm.ModuleWithStateDictSerialization):
    """Renamed keys and a Conv1D-like torch layout ([in, out])."""

    inner: nn.Linear

    def _state_dict_key_map(self):
        return {"inner": "c_proj"}


class InOut(sdm.ModuleWithStateDictSerialization):
    weight: nx.NamedArray

    def _export_layout(self):
        return {"weight": (("embed",), ("heads", "head_size"))}


def test_key_map_and_export_layout():
    lin = _randomize(nn.Linear.init(Embed, (Heads, HeadSize), key=jax.random.key(0)))
    assert set(sdm.to_state_dict(Proj(lin))) == {"c_proj.weight", "c_proj.bias"}
    m = InOut(lin.weight)
    sd = sdm.to_torch_compatible_state_dict(m)
    expected = np.asarray(lin.weight.rearrange(("embed", "heads", "head_size")).array).reshape(Embed.size, -1)
    np.testing.assert_array_equal(np.asarray(sd["weight"]), expected)
    _assert_same_by_name(m, sdm.from_torch_compatible_state_dict(m, sd))


class Transposing(sdm.ModuleWithStateDictSerialization):
    """Overrides flatten/unflatten itself (read whole, then unflattened)."""

    weight: nx.NamedArray

    def flatten_for_export(self):
        return Transposing(self.weight.rearrange(("head_size", "heads")))

    def unflatten_from_export(self, template):
        return Transposing(self.weight.rearrange(template.weight.axis_names))


def test_overridden_flatten_is_used_on_the_way_back():
    m = Transposing(nx.random.normal(jax.random.key(0), (Heads, HeadSize)))
    sd = sdm.to_torch_compatible_state_dict(m)
    assert sd["weight"].shape == (HeadSize.size, Heads.size)
    back = sdm.from_torch_compatible_state_dict(m, {"weight": np.asarray(sd["weight"])}, mapping={"heads": "model"},
                                                mesh=_mesh())
    _assert_same_by_name(m, back)
    assert back.weight.array.sharding.spec == nx.partitioning.sharding_for(back.weight, {"heads": "model"}, _mesh()).spec


def test_errors_name_the_key(model):
    sd = sdm.to_state_dict(model)
    missing = {k: v for k, v in sd.items() if k != "blocks.1.ln.bias"}
    with pytest.raises(KeyError, match=r"no key 'blocks\.1\.ln\.bias'"):
        sdm.from_state_dict(model, missing)
    wrong_shape = {**sd, "head.bias": np.zeros(5, np.float32)}
    with pytest.raises(ValueError, match=r"key 'head\.bias'.*shape \(5,\)"):
        sdm.from_state_dict(model, wrong_shape)
    wrong_names = {**sd, "head.bias": nx.named(np.zeros(16, np.float32), "hidden")}
    with pytest.raises(ValueError, match=r"key 'head\.bias'.*axes \('hidden',\).*no axis 'hidden'"):
        sdm.from_state_dict(model, wrong_names)
    with pytest.raises(ValueError, match=r"have no place in the template: \['stray'\]"):
        sdm.from_state_dict(model, {**sd, "stray": np.zeros(1)})
    assert isinstance(sdm.from_state_dict(model, {**sd, "stray": np.zeros(1)}, strict=False), Model)
    with pytest.raises(TypeError, match=r"key 'head\.bias'.*dtype int32"):
        sdm.from_state_dict(model, {**sd, "head.bias": np.zeros(16, np.int32)})
    with pytest.raises(nx.ShardingError, match=r"tensor 'head\.weight'"):
        sdm.from_state_dict(model, sd, mapping={"heads": "model", "mlp": "model"}, mesh=_mesh())
    with pytest.raises(TypeError, match=r"value of key 'x' is a str"):
        sdm.save_state_dict({"x": "text"}, "/nonexistent/never-written.safetensors")


def test_haliax_names_exist():
    for name in ("StateDict", "ModuleWithStateDictSerialization", "flatten_modules_for_export", "from_state_dict",
                 "from_torch_compatible_state_dict", "load_state_dict", "save_state_dict", "to_numpy_state_dict",
                 "to_state_dict", "to_torch_compatible_state_dict", "unflatten_modules_from_export", "with_prefix"):
        assert hasattr(nx.state_dict, name)
    assert sdm.with_prefix("a", "b") == "a.b" and sdm.with_prefix(None, "b") == "b"


def test_restored_arrays_never_alias_the_callers_arrays(model):
    """A restore onto one device hands its own aligned buffers to the device arrays without a copy,
    but never the caller's: changing a NumPy state dict afterwards changes nothing restored."""
    def aligned_copy(v):  # the caller's own 64-byte aligned array: alignment alone would allow aliasing
        v = np.asarray(v)
        raw = np.empty(v.nbytes + 64, np.uint8)
        out = raw[(-raw.ctypes.data) % 64:][:v.nbytes].view(v.dtype).reshape(v.shape)
        out[...] = v
        return out

    numpy_sd = {k: aligned_copy(v.array if isinstance(v, nx.NamedArray) else v)
                for k, v in sdm.to_state_dict(model).items()}
    assert all(v.ctypes.data % sdm.ALIGNMENT == 0 and v.flags.c_contiguous for v in numpy_sd.values())
    same_layout = eqx.filter_eval_shape(Model.init, jax.random.key(1), out_first=True)  # plain arrays: no names
    restored = sdm.from_state_dict(same_layout, numpy_sd)
    _assert_same_by_name(model, restored)
    for v in numpy_sd.values():
        v[...] = 0
    _assert_same_by_name(model, restored)


def test_aligned_buffers_of_a_lazy_restore_become_device_arrays_without_a_copy(model, other_layout_template,
                                                                               tmp_path):
    path = tmp_path / "m.safetensors"
    sdm.save_state_dict(sdm.to_state_dict(model), path)
    restored = sdm.from_state_dict(other_layout_template, sdm.load_state_dict(path, lazy=True))
    _assert_same_by_name(model, restored)
    stacked = restored.blocks.stacked.attn.weight.array  # read layer by layer into one aligned buffer
    assert stacked.unsafe_buffer_pointer() % sdm.ALIGNMENT == 0
    host = sdm.aligned_empty((4, 4), np.float32)
    host[...] = 1.0
    on_device = jax.device_put(sdm._device_ready(host))
    assert on_device.unsafe_buffer_pointer() == host.ctypes.data  # aliased: the copy this saves
    mine = np.ones((4, 4), np.float32)
    assert sdm._device_ready(mine) is not mine  # the caller's array: always copied
