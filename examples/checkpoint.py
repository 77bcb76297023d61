"""Checkpoints as safetensors files, with each tensor's axis names in the metadata.

A checkpoint holds any number of named pytrees (``{"params": ..., "opt_state": ...}``):
tensor ``"params/.blocks.stacked.attn.qkv.weight"`` is the leaf at that key path. The
header metadata holds ``step``, ``axes`` (a JSON object: tensor -> axis names, for every
NamedArray leaf) and whatever JSON-able ``extra`` the caller passes (the model config).
Loading needs templates of the same structure (e.g. a freshly built model); names, shapes
and dtypes are checked against them.

>>> import tempfile, jax.numpy as jnp, namax as nx
>>> tree = {"w": nx.ones((nx.Axis("embed", 2), nx.Axis("mlp", 3)))}
>>> path = save(tempfile.mkdtemp(), 5, {"params": tree})
>>> step, loaded, meta = load(path, {"params": tree})
>>> step, loaded["params"]["w"].axis_names, meta["axes"]["params/['w']"]
(5, ('embed', 'mlp'), ['embed', 'mlp'])
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any, Mapping, Optional

import jax
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from namax import NamedArray, is_named

_NAME = re.compile(r"step_(\d+)\.safetensors$")


def _entries(prefix: str, tree: Any) -> list[tuple[str, Any, Optional[tuple[str, ...]]]]:
    """``(tensor name, array, axis names or None)`` for every array leaf of ``tree``."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_named)[0]:
        key = f"{prefix}/{jax.tree_util.keystr(path)}"
        if isinstance(leaf, NamedArray):
            out.append((key, leaf.array, leaf.axis_names))
        else:
            out.append((key, leaf, None))
    return out


def _to_host(x: Any) -> np.ndarray:
    """The whole value of ``x`` as NumPy, gathering shards from every process if needed."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def save(directory: str | os.PathLike, step: int, trees: Mapping[str, Any], extra: Optional[Mapping] = None) -> pathlib.Path:
    """Write ``directory/step_<step>.safetensors``; return its path.

    Every process must call this (gathering sharded arrays is collective); process 0 writes,
    through a temporary file renamed into place, so a crash never leaves half a checkpoint.
    """
    tensors: dict[str, np.ndarray] = {}
    axes: dict[str, list[str]] = {}
    for prefix, tree in trees.items():
        for key, value, names in _entries(prefix, tree):
            tensors[key] = np.array(_to_host(value), order="C")  # (ascontiguousarray would make scalars 1-d)
            if names is not None:
                axes[key] = list(names)
    directory = pathlib.Path(directory)
    path = directory / f"step_{step:06d}.safetensors"
    if jax.process_index() == 0:
        directory.mkdir(parents=True, exist_ok=True)
        metadata = {"format": "namax-examples/1", "step": str(step), "axes": json.dumps(axes),
                    "extra": json.dumps(dict(extra or {}))}
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    return path


def latest(directory: str | os.PathLike) -> Optional[pathlib.Path]:
    """The checkpoint with the highest step in ``directory``, or None."""
    directory = pathlib.Path(directory)
    found = [(int(m.group(1)), p) for p in directory.glob("step_*.safetensors") if (m := _NAME.search(p.name))]
    return max(found)[1] if found else None


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The header metadata of a checkpoint: ``step`` (int), ``axes`` and ``extra`` (decoded JSON)."""
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
    return {"step": int(meta.get("step", "0")), "axes": json.loads(meta.get("axes", "{}")),
            "extra": json.loads(meta.get("extra", "{}")), "format": meta.get("format")}


def load(path: str | os.PathLike, templates: Mapping[str, Any]) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """``(step, trees, metadata)``: each template's leaves replaced by the stored tensors.

    A tensor saved under another storage layout (the same axis names in another order) is
    transposed by name. A missing tensor, or one whose shape, dtype or axis names differ
    from the template's, raises ``ValueError`` naming it.
    """
    meta = read_metadata(path)
    out = {}
    with safe_open(str(path), framework="numpy") as f:
        stored = set(f.keys())
        for prefix, template in templates.items():
            leaves, treedef = jax.tree_util.tree_flatten(template, is_leaf=is_named)
            new = []
            for (key, value, names), leaf in zip(_entries(prefix, template), leaves):
                if key not in stored:
                    raise ValueError(f"checkpoint {path}: no tensor {key!r} (it has {len(stored)} tensors)")
                array = f.get_tensor(key)
                stored_names = meta["axes"].get(key)
                if names is not None and stored_names is not None and tuple(stored_names) != names:
                    if sorted(stored_names) != sorted(names):
                        raise ValueError(f"checkpoint {path}: tensor {key!r} has axes {stored_names}, "
                                         f"the template wants {list(names)}")
                    # saved under another layout: the names say which dim is which
                    array = np.transpose(array, [list(stored_names).index(n) for n in names])
                if array.shape != tuple(value.shape) or array.dtype != np.dtype(value.dtype):
                    raise ValueError(f"checkpoint {path}: tensor {key!r} is {array.dtype}{list(array.shape)}, "
                                     f"the template wants {np.dtype(value.dtype)}{list(value.shape)}")
                new.append(NamedArray(array, leaf.axes) if isinstance(leaf, NamedArray) else array)
            out[prefix] = jax.tree_util.tree_unflatten(treedef, new)
    return meta["step"], out, meta


__all__ = ["save", "load", "latest", "read_metadata"]
