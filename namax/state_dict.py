"""State dicts: a model as a flat ``{"dotted.key": array}`` dict, and back, by name.

Keys follow PyTorch's convention: module fields, dict keys and list indices joined by
dots (``"blocks.0.attn.qkv.weight"``); a :class:`namax.nn.Stacked` writes one key per
layer (``"blocks.0.weight"``, ``"blocks.1.weight"``, ...). :func:`to_state_dict` keeps
each parameter's axis names (its values are NamedArrays), :func:`save_state_dict` writes
them into the safetensors metadata, and :func:`from_state_dict` puts every tensor into
the template by name: a tensor stored in another axis order is transposed by name, and
under an axis mapping (argument or :func:`namax.axis_mapping`) each device reads only its
own block of each tensor (from a file opened with ``load_state_dict(path, lazy=True)``,
through safetensors' ``get_slice``).

>>> import jax, namax as nx
>>> Embed, Out = nx.make_axes(embed=4, out=3)
>>> layer = nx.nn.Linear.init(Embed, Out, key=jax.random.key(0))
>>> sd = to_state_dict(layer, prefix="proj")
>>> sorted(sd), sd["proj.weight"].axis_names == layer.weight.axis_names
(['proj.bias', 'proj.weight'], True)
>>> back = from_state_dict(layer, sd, prefix="proj")
>>> bool((back.weight.array == layer.weight.array).all())
True

The torch-compatible variants (:func:`to_torch_compatible_state_dict`,
:func:`from_torch_compatible_state_dict`) give plain arrays in PyTorch's layouts: a
``Linear``'s weight is ``[out, in]`` with its ``Out`` axes flattened into one dimension
and its ``In`` axes into another (whatever order namax stores it in), ``LayerNorm`` and
``Embedding`` weights are flattened the same way. A module declares its own layouts with
:class:`ModuleWithStateDictSerialization` (``_export_layout``) and renames its keys with
``_state_dict_key_map``.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import itertools
import json
import math
import os
import pathlib
import weakref
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, TypeVar, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import partitioning as _part
from .axis import Axis, ensure_tuple
from .named import NamedArray
from .nn.embedding import Embedding
from .nn.linear import Linear
from .nn.normalization import LayerNorm, RMSNorm
from .nn.scan import BlockSeq, Stacked

StateDict = dict[str, Any]
"""A flat state dict: dotted key -> array (a NamedArray, a jax or NumPy array, or a :class:`LazyTensor`)."""

T = TypeVar("T")
Mod = TypeVar("Mod", bound=eqx.Module)

AXES_METADATA_KEY = "namax.axes"
"""The safetensors metadata entry holding each tensor's axis names (JSON: key -> list of names)."""


# --- keys --------------------------------------------------------------------------------------
def with_prefix(prefix: Optional[str], leaf: Optional[str]) -> Optional[str]:
    """Join two optional key parts with a dot, as PyTorch state dicts do.

    >>> with_prefix("blocks", "0"), with_prefix(None, "weight"), with_prefix("proj", None), with_prefix(None, None)
    ('blocks.0', 'weight', 'proj', None)
    """
    if prefix is None:
        return leaf
    if leaf is None:
        return prefix
    return f"{prefix}.{leaf}"


def is_jax_array_like(x: Any) -> bool:
    """True for values with a shape and a dtype (jax and NumPy arrays, ``jax.ShapeDtypeStruct``).

    >>> import numpy as np
    >>> is_jax_array_like(np.zeros(2)), is_jax_array_like(3), is_jax_array_like("w")
    (True, False, False)
    """
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, NamedArray)


def _describe(prefix: Optional[str]) -> str:
    return repr(prefix) if prefix is not None else "(top level)"


def _names(spec: Any) -> tuple[str, ...]:
    return tuple(a.name if isinstance(a, Axis) else a for a in ensure_tuple(spec))


def _flat_name(group: Sequence[str]) -> str:
    """The name of a dimension that flattens ``group`` (one axis keeps its own name)."""
    return group[0] if len(group) == 1 else "*".join(group)


# --- modules -------------------------------------------------------------------------------------
class ModuleWithStateDictSerialization(eqx.Module):
    """An Equinox module that controls its own state-dict keys and torch layouts.

    Override ``_state_dict_key_map`` to rename fields (``None`` puts a field's keys at
    the module's own prefix) and ``_export_layout`` to say how each array field is
    flattened for PyTorch (``{field: (group, group, ...)}``, each group a tuple of axis
    names flattened into one dimension, in this order; axes in no group go first). The
    methods ``to_state_dict``, ``from_state_dict``, ``flatten_for_export`` and
    ``unflatten_from_export`` may be overridden too (an overridden ``from_state_dict``
    reads its tensors whole: only the default reads per device; keys it reads itself,
    rather than through the default, count as unused for ``strict=True``).

    >>> import jax, namax as nx
    >>> class Block(ModuleWithStateDictSerialization):
    ...     proj: nx.nn.Linear
    ...     def _state_dict_key_map(self):
    ...         return {"proj": "c_proj"}
    >>> E, O = nx.make_axes(embed=2, out=3)
    >>> sorted(to_state_dict(Block(nx.nn.Linear.init(E, O, key=jax.random.key(0)))))
    ['c_proj.bias', 'c_proj.weight']
    """

    def _state_dict_key_map(self) -> dict[str, Optional[str]]:
        """Field name -> state-dict key (``None``: the field's keys go at this module's prefix)."""
        return {}

    def _export_layout(self) -> dict[str, tuple[tuple[str, ...], ...]]:
        """Field name -> the groups of axis names each torch dimension flattens (default: none)."""
        return {}

    def to_state_dict(self, prefix: Optional[str] = None) -> StateDict:
        """This module's state dict (see :func:`to_state_dict`).

        >>> import namax as nx
        >>> class Scale(ModuleWithStateDictSerialization):
        ...     w: nx.NamedArray
        >>> list(Scale(nx.ones(nx.Axis("embed", 2))).to_state_dict("s"))
        ['s.w']
        """
        out: StateDict = {}
        _module_to(self, prefix, out)
        return out

    def from_state_dict(self: Mod, state_dict: Mapping[str, Any], prefix: Optional[str] = None) -> Mod:
        """This module with its arrays read from ``state_dict`` (see :func:`from_state_dict`).

        >>> import numpy as np, namax as nx
        >>> class Scale(ModuleWithStateDictSerialization):
        ...     w: nx.NamedArray
        >>> Scale(nx.zeros(nx.Axis("embed", 2))).from_state_dict({"s.w": np.ones(2, np.float32)}, "s").w.array.tolist()
        [1.0, 1.0]
        """
        with _restoring(None, None, strict=False, export=None) as ctx:
            return _finalize(_module_from(self, state_dict, prefix), ctx)

    def flatten_for_export(self: Mod) -> Mod:
        """This module with each array field flattened as ``_export_layout`` says.

        >>> import namax as nx
        >>> class Proj(ModuleWithStateDictSerialization):
        ...     w: nx.NamedArray
        ...     def _export_layout(self):
        ...         return {"w": (("heads", "head_size"), ("embed",))}
        >>> Proj(nx.zeros(nx.make_axes(embed=4, heads=2, head_size=3))).flatten_for_export().w.axes
        (Axis('heads*head_size', 6), Axis('embed', 4))
        """
        return _apply_layout(self, _layout(self), flatten=True)

    def unflatten_from_export(self: Mod, template: Mod) -> Mod:
        """Undo :meth:`flatten_for_export`: each array field reshaped to ``template``'s axes.

        >>> import namax as nx
        >>> class Proj(ModuleWithStateDictSerialization):
        ...     w: nx.NamedArray
        ...     def _export_layout(self):
        ...         return {"w": (("heads", "head_size"), ("embed",))}
        >>> p = Proj(nx.zeros(nx.make_axes(embed=4, heads=2, head_size=3)))
        >>> p.flatten_for_export().unflatten_from_export(p).w.axis_names
        ('embed', 'heads', 'head_size')
        """
        return _apply_layout(self, _layout(template), flatten=False, template=template)


def _overrides(module: Any, name: str) -> bool:
    return getattr(type(module), name) is not getattr(ModuleWithStateDictSerialization, name)


def _key_map(module: Any) -> dict[str, Optional[str]]:
    if isinstance(module, ModuleWithStateDictSerialization):
        return dict(module._state_dict_key_map())
    if isinstance(module, BlockSeq):
        return {"blocks": None}
    return {}


def _layout(module: Any) -> dict[str, tuple[tuple[str, ...], ...]]:
    """The torch layout of each array field of ``module`` (groups of axis names per dimension)."""
    if isinstance(module, ModuleWithStateDictSerialization):
        raw = module._export_layout()
    elif isinstance(module, Linear):
        raw = {"weight": (_names(module.Out), _names(module.In)), "bias": (_names(module.Out),)}
    elif isinstance(module, Embedding):
        raw = {"weight": ((module.Vocab.name,), _names(module.Embed))}
    elif isinstance(module, (LayerNorm, RMSNorm)):
        raw = {"weight": (_names(module.axis),), "bias": (_names(module.axis),)}
    else:
        raw = {}
    return {f: tuple(_names(g) for g in groups) for f, groups in raw.items()}


def _fields(module: eqx.Module) -> list[str]:
    return [f.name for f in dataclasses.fields(module) if not f.metadata.get("static", False)]


def _replace(module: eqx.Module, changes: Mapping[str, Any]) -> eqx.Module:
    """A copy of ``module`` with some fields replaced (no ``__init__``: the values are the module's own)."""
    out = object.__new__(type(module))
    for f in dataclasses.fields(module):
        object.__setattr__(out, f.name, changes[f.name] if f.name in changes else getattr(module, f.name))
    return out


# --- to_state_dict ----------------------------------------------------------------------------
def _put(out: StateDict, key: Optional[str], value: Any) -> None:
    if key is None:
        raise ValueError("to_state_dict: a single array needs a prefix to be its key (pass prefix=...)")
    if key in out:
        raise ValueError(f"to_state_dict: two values have the key {key!r} (check _state_dict_key_map renames)")
    out[key] = value


def _slice_layer(tree: Any, Layers: Axis, i: int) -> Any:
    def pick(leaf):
        if isinstance(leaf, NamedArray):
            if not leaf.has_axis(Layers.name):
                raise ValueError(f"Stacked: a parameter with axes {leaf.axis_names} lacks the Layers axis "
                                 f"{Layers.name!r}")
            return leaf[Layers.name, i]
        if is_jax_array_like(leaf):
            return leaf[i]
        return leaf

    return jax.tree_util.tree_map(pick, tree, is_leaf=lambda x: isinstance(x, NamedArray))


def _to(tree: Any, prefix: Optional[str], out: StateDict) -> None:
    if tree is None:
        return
    if isinstance(tree, NamedArray) or is_jax_array_like(tree):
        _put(out, prefix, tree)
    elif isinstance(tree, Stacked):
        for i in range(tree.Layers.size):
            _to(_slice_layer(tree.stacked, tree.Layers, i), with_prefix(prefix, str(i)), out)
    elif isinstance(tree, ModuleWithStateDictSerialization) and _overrides(tree, "to_state_dict"):
        for k, v in tree.to_state_dict(prefix).items():
            _put(out, k, v)
    elif isinstance(tree, eqx.Module):
        _module_to(tree, prefix, out)
    elif isinstance(tree, Mapping):
        for k, v in tree.items():
            _to(v, with_prefix(prefix, str(k)), out)
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            _to(v, with_prefix(prefix, str(i)), out)
    elif isinstance(tree, (bool, int, float, complex, str)):
        _put(out, prefix, tree)
    elif callable(tree):
        return  # functions held in modules (activations) are not state
    else:
        raise TypeError(f"to_state_dict: cannot put a {type(tree).__name__} (at key {_describe(prefix)}) into a "
                        f"state dict")


def _module_to(module: eqx.Module, prefix: Optional[str], out: StateDict) -> None:
    renames = _key_map(module)
    for name in _fields(module):
        _to(getattr(module, name), with_prefix(prefix, renames.get(name, name)), out)


def to_state_dict(tree: Any, prefix: Optional[str] = None) -> StateDict:
    """A flat state dict of ``tree``: dotted keys -> NamedArrays (names kept) and arrays.

    >>> import jax, namax as nx
    >>> Layers, Embed = nx.make_axes(layers=2, embed=3)
    >>> stack = nx.nn.Stacked.init(Layers, nx.nn.LayerNorm)(Embed)
    >>> {k: v.axis_names for k, v in to_state_dict({"norms": stack}).items()}
    {'norms.0.weight': ('embed',), 'norms.0.bias': ('embed',), 'norms.1.weight': ('embed',), 'norms.1.bias': ('embed',)}

    Module fields, dict keys and list indices make the keys (``_state_dict_key_map``
    renames); a ``Stacked`` gives one key per layer, each without the ``Layers`` axis;
    static fields and ``None`` are left out, Python numbers and strings kept as they are.
    """
    out: StateDict = {}
    _to(tree, prefix, out)
    return out


def to_numpy_state_dict(model: Any, prefix: Optional[str] = None) -> StateDict:
    """:func:`to_state_dict` with every array as a NumPy array on the host (shards gathered; names dropped).

    >>> import namax as nx
    >>> sd = to_numpy_state_dict({"w": nx.ones(nx.Axis("embed", 2))})
    >>> type(sd["w"]).__name__, sd["w"].tolist()
    ('ndarray', [1.0, 1.0])
    """
    return {k: (_to_host(v.array if isinstance(v, NamedArray) else v) if _arrayish(v) else v)
            for k, v in to_state_dict(model, prefix).items()}


def _arrayish(v: Any) -> bool:
    return isinstance(v, NamedArray) or is_jax_array_like(v)


ALIGNMENT = 64
"""Bytes: a C-contiguous host array aligned to this becomes a CPU device array without a copy
(``jax.device_put`` aliases it), so restored blocks are read into such buffers."""


def aligned_empty(shape: Sequence[int], dtype: Any) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an :data:`ALIGNMENT` boundary.

    >>> a = aligned_empty((3, 5), np.float32)
    >>> a.shape, a.dtype, a.ctypes.data % ALIGNMENT, a.flags.c_contiguous
    ((3, 5), dtype('float32'), 0, True)
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    _OWN_BUFFERS[id(raw)] = raw
    start = (-raw.ctypes.data) % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


_OWN_BUFFERS: "weakref.WeakValueDictionary[int, np.ndarray]" = weakref.WeakValueDictionary()
"""The buffers :func:`aligned_empty` made (and nobody else holds): only these are handed to a device array
without a copy; a caller's own array is always copied, so changing it later changes nothing restored."""


def _device_ready(host: np.ndarray) -> np.ndarray:
    """``host`` itself if it lives in one of our aligned buffers (``jax.device_put`` aliases it on a
    CPU), else a copy into a new one."""
    root = host
    while isinstance(root.base, np.ndarray):
        root = root.base
    if _OWN_BUFFERS.get(id(root)) is root and host.flags.c_contiguous and host.ctypes.data % ALIGNMENT == 0:
        return host
    out = aligned_empty(host.shape, host.dtype)
    np.copyto(out, host)
    return out


def _to_host(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


# --- flatten / unflatten for export ------------------------------------------------------------
def _check_groups(axes: tuple[Axis, ...], groups: tuple[tuple[str, ...], ...], where: str) -> tuple[str, ...]:
    """The axes in no group (they go first); errors for names the array lacks or groups that overlap."""
    names = [a.name for a in axes]
    seen: set[str] = set()
    for g in groups:
        for n in g:
            if n not in names:
                raise ValueError(f"{where}: the export layout names axis {n!r}, the array has axes {tuple(names)}")
            if n in seen:
                raise ValueError(f"{where}: the export layout uses axis {n!r} twice ({groups})")
            seen.add(n)
    return tuple(n for n in names if n not in seen)


def _flatten_named(x: NamedArray, groups: tuple[tuple[str, ...], ...], where: str) -> NamedArray:
    others = _check_groups(x.axes, groups, where)
    sizes = x.shape
    order = [*others, *(n for g in groups for n in g)]
    array = jnp.transpose(x.array, [x.axis_names.index(n) for n in order])
    new_axes = [Axis(n, sizes[n]) for n in others] + [Axis(_flat_name(g), math.prod(sizes[n] for n in g))
                                                        for g in groups]
    return NamedArray(array.reshape([a.size for a in new_axes]), new_axes)


def _unflatten_named(value: Any, template: NamedArray, groups: tuple[tuple[str, ...], ...], where: str) -> NamedArray:
    others = _check_groups(template.axes, groups, where)
    sizes = template.shape
    if isinstance(value, NamedArray) and set(value.axis_names) == set(template.axis_names):
        return NamedArray(jnp.transpose(value.array, [value.axis_names.index(n) for n in template.axis_names]),
                          template.axes)  # already unflattened
    flat = [*others, *(_flat_name(g) for g in groups)]
    flat_sizes = [sizes[n] for n in others] + [math.prod(sizes[n] for n in g) for g in groups]
    array = value
    if isinstance(value, NamedArray):
        if set(value.axis_names) != set(flat):
            raise ValueError(f"{where}: the flattened array has axes {value.axis_names}, expected {tuple(flat)}")
        array = jnp.transpose(value.array, [value.axis_names.index(n) for n in flat])
    if tuple(array.shape) != tuple(flat_sizes):
        raise ValueError(f"{where}: the flattened array has shape {tuple(array.shape)}, expected {tuple(flat_sizes)} "
                         f"(dimensions {tuple(flat)})")
    order = [*others, *(n for g in groups for n in g)]
    array = jnp.reshape(array, [sizes[n] for n in order])
    return NamedArray(jnp.transpose(array, [order.index(n) for n in template.axis_names]), template.axes)


def _apply_layout(module: eqx.Module, layout: Mapping[str, Any], *, flatten: bool, template: Any = None) -> Any:
    changes = {}
    for name, groups in layout.items():
        value = getattr(module, name)
        if value is None:
            continue
        where = f"{type(module).__name__}.{name}"
        if flatten:
            if not isinstance(value, NamedArray):
                raise TypeError(f"{where}: the export layout is for a NamedArray, got {type(value).__name__}")
            changes[name] = _flatten_named(value, groups, where)
        else:
            changes[name] = _unflatten_named(value, getattr(template, name), groups, where)
    return _replace(module, changes)


def flatten_modules_for_export(t: T) -> T:
    """Every module in ``t`` with its arrays in torch layouts (``Linear``: ``[out, in]``, flattened).

    >>> import jax, namax as nx
    >>> Embed, Head, Key = nx.make_axes(embed=4, head=2, key=3)
    >>> proj = nx.nn.Linear.init((Head, Key), Embed, key=jax.random.key(0))
    >>> flatten_modules_for_export(proj).weight.axes
    (Axis('embed', 4), Axis('head*key', 6))

    Axes in no group (e.g. a ``Stacked`` model's ``layers``) stay in front; a flattened
    dimension is named after its axes joined by ``*``.
    """
    return _flatten_tree(t)


def _flatten_tree(x: Any) -> Any:
    if isinstance(x, NamedArray) or x is None:
        return x
    if isinstance(x, eqx.Module):
        m = _replace(x, {name: _flatten_tree(getattr(x, name)) for name in _fields(x)})
        if isinstance(m, ModuleWithStateDictSerialization):
            return m.flatten_for_export()
        return _apply_layout(m, _layout(m), flatten=True)
    if isinstance(x, dict):
        return type(x)((k, _flatten_tree(v)) for k, v in x.items())
    if isinstance(x, (list, tuple)) and not hasattr(x, "_fields"):
        return type(x)(_flatten_tree(v) for v in x)
    return x


def unflatten_modules_from_export(t: T, template: T) -> T:
    """Undo :func:`flatten_modules_for_export`: ``t``'s arrays reshaped to ``template``'s axes.

    >>> import jax, namax as nx
    >>> Embed, Head, Key = nx.make_axes(embed=4, head=2, key=3)
    >>> proj = nx.nn.Linear.init((Head, Key), Embed, key=jax.random.key(0))
    >>> back = unflatten_modules_from_export(flatten_modules_for_export(proj), proj)
    >>> back.weight.axes == proj.weight.axes, bool((back.weight.array == proj.weight.array).all())
    (True, True)
    """
    return _unflatten_tree(t, template)


def _unflatten_tree(x: Any, tmpl: Any) -> Any:
    if isinstance(tmpl, NamedArray) or tmpl is None:
        return x
    if isinstance(tmpl, eqx.Module):
        if not isinstance(x, type(tmpl)):
            raise TypeError(f"unflatten_modules_from_export: expected a {type(tmpl).__name__}, got {type(x).__name__}")
        if isinstance(x, ModuleWithStateDictSerialization):
            x = x.unflatten_from_export(tmpl)
        else:
            x = _apply_layout(x, _layout(tmpl), flatten=False, template=tmpl)
        return _replace(x, {n: _unflatten_tree(getattr(x, n), getattr(tmpl, n)) for n in _fields(tmpl)})
    if isinstance(tmpl, dict):
        return type(tmpl)((k, _unflatten_tree(x[k], v)) for k, v in tmpl.items())
    if isinstance(tmpl, (list, tuple)) and not hasattr(tmpl, "_fields"):
        return type(tmpl)(_unflatten_tree(a, b) for a, b in zip(x, tmpl))
    return x


def to_torch_compatible_state_dict(t: Any, *, flatten: bool = True, prefix: Optional[str] = None,
                                   filter: Union[bool, Callable[[Any], bool]] = is_jax_array_like) -> StateDict:
    """A state dict of plain arrays in PyTorch's layouts (``Linear``: ``[out, in]``, flattened).

    >>> import jax, namax as nx
    >>> Layers, Embed, Head, Key = nx.make_axes(layers=2, embed=4, head=2, key=3)
    >>> stack = nx.nn.Stacked.init(Layers, nx.nn.Linear)((Head, Key), Embed, key=jax.random.key(0))
    >>> {k: v.shape for k, v in to_torch_compatible_state_dict(stack, prefix="h").items()}
    {'h.0.weight': (4, 6), 'h.0.bias': (4,), 'h.1.weight': (4, 6), 'h.1.bias': (4,)}

    ``flatten=False`` keeps namax's storage order (which depends on the backend).
    ``filter`` selects the values kept (default: arrays only).
    """
    if flatten:
        t = flatten_modules_for_export(t)
    out = {}
    for k, v in to_state_dict(t, prefix).items():
        v = v.array if isinstance(v, NamedArray) else v
        if filter is True or (callable(filter) and filter(v)):
            out[k] = v
    return out


# --- sources: what a state-dict value can be read from --------------------------------------
class LazyTensor:
    """One tensor of a safetensors file, read only when (and as far as) it is needed.

    ``shape``, ``dtype`` and ``axis_names`` (from the file's ``namax.axes`` metadata, or
    None) come from the header; ``tensor[slices]`` reads a block, ``np.asarray(tensor)``
    the whole tensor. Made by ``load_state_dict(path, lazy=True)``.

    >>> import tempfile, os, numpy as np, namax as nx
    >>> with tempfile.TemporaryDirectory() as d:
    ...     save_state_dict({"w": nx.named(np.arange(6.0).reshape(2, 3), ("embed", "mlp"))}, os.path.join(d, "m.st"))
    ...     t = load_state_dict(os.path.join(d, "m.st"), lazy=True)["w"]
    ...     t.shape, t.axis_names, t[1:, :2].tolist()
    ((2, 3), ('embed', 'mlp'), [[3.0, 4.0]])
    """

    def __init__(self, owner: "LazyStateDict", key: str, shape: tuple[int, ...], dtype: np.dtype,
                 axis_names: Optional[tuple[str, ...]]):
        self._owner, self.key, self.shape, self.dtype, self.axis_names = owner, key, shape, dtype, axis_names

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        if len(index) > len(self.shape):
            raise IndexError(f"LazyTensor {self.key!r} of shape {self.shape}: {len(index)} indices given")
        clipped = []
        for i, n in zip(index, self.shape):  # within this view's shape (a truncated view is smaller than the file's)
            if isinstance(i, slice):
                clipped.append(slice(*i.indices(n)))
            elif isinstance(i, (int, np.integer)) and not isinstance(i, bool) and -n <= i < n:
                clipped.append(int(i) % n)
            else:
                raise IndexError(f"LazyTensor {self.key!r} of shape {self.shape}: index {i!r} (ints in range and "
                                 f"slices only)")
        clipped += [slice(0, n) for n in self.shape[len(clipped):]]
        return self._owner._read(self.key, tuple(clipped))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        full = self[tuple(slice(0, n) for n in self.shape)]
        return full if dtype is None else full.astype(dtype)

    def with_axis_names(self, axis_names: Optional[Sequence[str]]) -> "LazyTensor":
        """The same tensor labelled with ``axis_names`` (one per dimension), e.g. for a file without names.

        >>> import tempfile, os, numpy as np
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_state_dict({"w": np.zeros((2, 3), np.float32)}, os.path.join(d, "m.st"))
        ...     load_state_dict(os.path.join(d, "m.st"), lazy=True)["w"].with_axis_names(("embed", "mlp")).axis_names
        ('embed', 'mlp')
        """
        if axis_names is not None:
            axis_names = tuple(axis_names)
            if len(axis_names) != len(self.shape):
                raise ValueError(f"LazyTensor {self.key!r} of shape {self.shape}: {len(axis_names)} axis names "
                                 f"{axis_names} given")
        return LazyTensor(self._owner, self.key, self.shape, self.dtype, axis_names)

    def truncated(self, n: int) -> "LazyTensor":
        """A view of the first ``n`` entries along the first dimension (read from the file as needed).

        >>> import tempfile, os, numpy as np
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_state_dict({"w": np.arange(8.0).reshape(4, 2)}, os.path.join(d, "m.st"))
        ...     np.asarray(load_state_dict(os.path.join(d, "m.st"), lazy=True)["w"].truncated(2)).tolist()
        [[0.0, 1.0], [2.0, 3.0]]
        """
        if not self.shape or not 0 <= n <= self.shape[0]:
            raise ValueError(f"LazyTensor {self.key!r} of shape {self.shape}: cannot keep the first {n} entries")
        return LazyTensor(self._owner, self.key, (n, *self.shape[1:]), self.dtype, self.axis_names)

    def __repr__(self) -> str:
        return f"LazyTensor({self.key!r}, shape={self.shape}, dtype={self.dtype}, axis_names={self.axis_names})"


_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
              "I16": np.int16, "I8": np.int8, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64,
              "BOOL": np.bool_, "BF16": jnp.bfloat16}


class LazyStateDict(Mapping[str, LazyTensor]):
    """A safetensors file as a read-only state dict of :class:`LazyTensor` values.

    ``metadata`` is the file's header metadata; ``bytes_read`` counts the tensor bytes
    read so far (a restore onto a mesh reads each device's block only).

    >>> import tempfile, os, numpy as np
    >>> with tempfile.TemporaryDirectory() as d:
    ...     save_state_dict({"w": np.zeros((4, 2), np.float32)}, os.path.join(d, "m.st"))
    ...     sd = load_state_dict(os.path.join(d, "m.st"), lazy=True)
    ...     _ = sd["w"][:2]
    >>> list(sd), sd["w"].shape, sd.bytes_read
    (['w'], (4, 2), 16)
    """

    def __init__(self, path: Union[str, os.PathLike]):
        from safetensors import safe_open

        self.path = pathlib.Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"load_state_dict: no file {str(self.path)!r}")
        from safetensors import SafetensorError

        try:
            self._handle = safe_open(str(self.path), framework="numpy")
        except SafetensorError as e:
            raise ValueError(f"load_state_dict: {str(self.path)!r} is not a readable safetensors file ({e})") from e
        self.metadata: dict[str, str] = dict(self._handle.metadata() or {})
        names = json.loads(self.metadata[AXES_METADATA_KEY]) if AXES_METADATA_KEY in self.metadata else {}
        self._tensors: dict[str, LazyTensor] = {}
        for key in self._handle.keys():
            sl = self._handle.get_slice(key)
            st_dtype = sl.get_dtype()
            if st_dtype not in _ST_DTYPES:
                raise TypeError(f"load_state_dict {self.path}: tensor {key!r} has dtype {st_dtype}, which namax "
                                f"cannot read")
            shape = tuple(sl.get_shape())
            axis_names = tuple(names[key]) if key in names else None
            if axis_names is not None and len(axis_names) != len(shape):
                raise ValueError(f"load_state_dict {self.path}: tensor {key!r} of shape {shape} has axis names "
                                 f"{axis_names} in the metadata")
            self._tensors[key] = LazyTensor(self, key, shape, np.dtype(_ST_DTYPES[st_dtype]), axis_names)
        self.bytes_read = 0

    def _read(self, key: str, index: Any) -> np.ndarray:
        if index == ():  # a 0-d tensor (get_slice gives it one dimension)
            block = np.asarray(self._handle.get_tensor(key))
        else:
            block = np.asarray(self._handle.get_slice(key)[index])
        self.bytes_read += block.nbytes
        return block

    def __getitem__(self, key: str) -> LazyTensor:
        return self._tensors[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __repr__(self) -> str:
        return f"LazyStateDict({str(self.path)!r}, {len(self)} tensors)"


@dataclasses.dataclass
class _Run:
    start: int
    stop: int
    dest: tuple
    shape: tuple


class _Grouped:
    """A stored tensor whose dimension ``d`` flattens the template axes ``groups[d]`` (row-major)."""

    def __init__(self, raw: Any, groups: tuple[tuple[str, ...], ...], sizes: Mapping[str, int]):
        self.raw, self.groups, self.sizes = raw, groups, dict(sizes)

    def _runs(self, group: tuple[str, ...], bounds: Mapping[str, tuple[int, int]]) -> list[_Run]:
        sizes = [self.sizes[a] for a in group]
        b = [bounds[a] for a in group]
        strides = [math.prod(sizes[i + 1:]) for i in range(len(group))]
        partial = [i for i in range(len(group)) if b[i] != (0, sizes[i])]
        if not partial:
            return [_Run(0, math.prod(sizes), (slice(None),) * len(group), tuple(sizes))]
        j = partial[-1]
        runs = []
        for lead in itertools.product(*(range(s, e) for s, e in b[:j])):
            base = sum(i * strides[t] for t, i in enumerate(lead))
            runs.append(_Run(base + b[j][0] * strides[j], base + b[j][1] * strides[j],
                             tuple(i - b[t][0] for t, i in enumerate(lead)) + (slice(None),) * (len(group) - j),
                             (b[j][1] - b[j][0], *sizes[j + 1:])))
        return runs

    def read(self, names: tuple[str, ...], bounds: Mapping[str, tuple[int, int]]) -> np.ndarray:
        order = [n for g in self.groups for n in g]
        shape = [bounds[n][1] - bounds[n][0] for n in order]
        back = [order.index(n) for n in names]
        combos = list(itertools.product(*(self._runs(g, bounds) for g in self.groups)))

        def piece(combo: tuple) -> np.ndarray:
            return np.asarray(self.raw[tuple(slice(r.start, r.stop) for r in combo)])

        if len(combos) == 1:  # one contiguous block per stored dim: the read is the block, no second copy
            return piece(combos[0]).reshape(shape).transpose(back)
        buf = aligned_empty(shape, self.raw.dtype)
        for combo in combos:
            buf[tuple(i for r in combo for i in r.dest)] = piece(combo).reshape([d for r in combo for d in r.shape])
        return buf.transpose(back)


class _Stacked:
    """One source per layer, stacked along the ``layers`` axis."""

    def __init__(self, layers: str, parts: list[Any], dtype: Any):
        self.layers, self.parts, self.dtype = layers, parts, dtype

    def read(self, names: tuple[str, ...], bounds: Mapping[str, tuple[int, int]]) -> np.ndarray:
        s, e = bounds[self.layers]
        inner = tuple(n for n in names if n != self.layers)
        at = names.index(self.layers)
        out = None
        for i in range(s, e):  # each layer straight into its slot: one layer read at a time, not all, then a stack
            layer = self.parts[i].read(inner, bounds)
            if out is None:
                out = aligned_empty(layer.shape[:at] + (e - s,) + layer.shape[at:], layer.dtype)
            out[(slice(None),) * at + (i - s,)] = layer
        if out is None:
            raise ValueError(f"state dict: an empty block ({s}:{e}) of the stacked axis {self.layers!r}")
        return out


class _HostArray:
    """An in-memory array read block by block (a jax array is copied to the host once)."""

    def __init__(self, array: Any):
        self._array, self.shape, self.dtype = array, tuple(array.shape), np.dtype(array.dtype)
        self._host: Optional[np.ndarray] = None

    def __getitem__(self, index: Any) -> np.ndarray:
        if self._host is None:
            self._host = _to_host(self._array)
        return self._host[index]


@dataclasses.dataclass
class _Pending:
    """A template leaf and where its value comes from; made into an array by :func:`_finalize`."""

    source: Any
    template: Any
    key: str


def _template_names(leaf: Any) -> tuple[str, ...]:
    if isinstance(leaf, NamedArray):
        return leaf.axis_names
    return tuple(f"#{i}" for i in range(len(leaf.shape)))  # a plain array: its dimensions by position


def _template_sizes(leaf: Any) -> dict[str, int]:
    shape = tuple(leaf.array.shape if isinstance(leaf, NamedArray) else leaf.shape)
    return dict(zip(_template_names(leaf), shape))


def _dtype_kind(dtype: Any) -> str:
    kind = np.dtype(dtype).kind
    return {"f": "float", "c": "complex", "i": "int", "u": "int", "b": "bool", "V": "float"}.get(kind, kind)


def _source(value: Any, template: Any, key: str, groups: Optional[tuple[tuple[str, ...], ...]]) -> _Grouped:
    """How the stored ``value`` maps onto ``template``'s axes, checked (names, sizes, dtype kind)."""
    t_names = _template_names(template)
    sizes = _template_sizes(template)
    if isinstance(value, NamedArray):
        raw, stored_names = _HostArray(value.array), value.axis_names
    elif isinstance(value, LazyTensor):
        raw, stored_names = value, value.axis_names
    elif is_jax_array_like(value) and not isinstance(value, jax.ShapeDtypeStruct):
        raw, stored_names = _HostArray(value), None
    elif isinstance(value, (bool, int, float, complex, np.generic)):
        raw, stored_names = _HostArray(np.asarray(value)), None
    else:
        raise TypeError(f"state dict key {key!r}: expected an array, got {type(value).__name__}")
    if groups is None:
        expected = tuple((n,) for n in t_names)
    else:
        others = _check_groups(tuple(Axis(n, s) for n, s in sizes.items()), groups, f"state dict key {key!r}")
        expected = tuple((n,) for n in others) + groups
    t_desc = f"{tuple(sizes.items())}" if isinstance(template, NamedArray) else f"shape {tuple(sizes.values())}"
    if stored_names is not None and isinstance(template, NamedArray):
        by_name = {_flat_name(g): g for g in expected}
        by_name.update({n: (n,) for n in t_names})
        unknown = [n for n in stored_names if n not in by_name]
        if unknown:
            raise ValueError(f"state dict key {key!r}: the stored tensor has axes {stored_names}, which do not match "
                             f"the template's axes {t_names} (no axis {unknown[0]!r})")
        stored_groups = tuple(by_name[n] for n in stored_names)
        covered = sorted(n for g in stored_groups for n in g)
        if covered != sorted(t_names):
            raise ValueError(f"state dict key {key!r}: the stored tensor has axes {stored_names}, the template "
                             f"has axes {t_names}")
    else:
        stored_groups = expected
    want = tuple(math.prod(sizes[n] for n in g) for g in stored_groups)
    if tuple(raw.shape) != want:
        layout = f" ({', '.join(_flat_name(g) for g in stored_groups)})" if stored_groups else ""
        raise ValueError(f"state dict key {key!r}: the stored tensor has shape {tuple(raw.shape)}, the template "
                         f"{t_desc} wants {want}{layout}")
    if _dtype_kind(raw.dtype) != _dtype_kind(template.dtype):
        raise TypeError(f"state dict key {key!r}: the stored tensor has dtype {np.dtype(raw.dtype)}, the template "
                        f"{np.dtype(template.dtype)} (a {_dtype_kind(raw.dtype)} is not cast to a "
                        f"{_dtype_kind(template.dtype)})")
    return _Grouped(raw, stored_groups, sizes)


# --- from_state_dict ------------------------------------------------------------------------------
@dataclasses.dataclass
class _Context:
    export: bool
    used: set
    mapping: Optional[dict]
    mesh: Optional[Mesh]


_CTX: contextvars.ContextVar[Optional[_Context]] = contextvars.ContextVar("namax_state_dict", default=None)


@contextlib.contextmanager
def _restoring(mapping: Any, mesh: Optional[Mesh], *, strict: bool, export: Optional[bool]) -> Iterator[_Context]:
    outer = _CTX.get()
    if outer is not None:  # a nested call (a module's from_state_dict): the outer call's settings hold
        if mapping is not None or mesh is not None:
            raise ValueError("from_state_dict: mapping= and mesh= belong to the outermost call only")
        if export is None or export == outer.export:
            yield outer
            return
        ctx = dataclasses.replace(outer, export=export)
    else:
        if mapping is not None:
            mapping = _part.normalize_mapping(mapping)
            p = _part.current_partitioning()
            mesh = _part.resolve_mesh(mesh or (p.mesh if p is not None else None))
            if mesh is None:
                raise ValueError("from_state_dict: mapping= given but no mesh (pass mesh= or use jax.set_mesh)")
        else:
            p = _part.current_partitioning()
            if p is not None:
                mapping = p.as_dict()
                mesh = _part.resolve_mesh(mesh or p.mesh)
                if mesh is None:
                    mapping = None  # an axis mapping without a mesh places nothing
            elif mesh is not None:
                mapping = {}  # a mesh and no mapping: every array replicated on it
        ctx = _Context(bool(export), set(), mapping, mesh)
    token = _CTX.set(ctx)
    try:
        yield ctx
    finally:
        _CTX.reset(token)


def _leaf_from(template: Any, sd: Mapping[str, Any], key: Optional[str], ctx: _Context,
               groups: Optional[tuple[tuple[str, ...], ...]] = None) -> _Pending:
    if key is None:
        raise ValueError("from_state_dict: a single array needs a prefix to be its key (pass prefix=...)")
    if key not in sd:
        parent = key.rsplit(".", 1)[0] if "." in key else None
        near = sorted(k for k in sd if parent is not None and k.startswith(parent + "."))[:6]
        what = f"axes {template.axis_names}" if isinstance(template, NamedArray) else f"shape {tuple(template.shape)}"
        hint = f"; keys under {parent!r}: {near}" if near else f"; the state dict has {len(sd)} keys"
        raise KeyError(f"state dict has no key {key!r} (the template's array there has {what}){hint}")
    ctx.used.add(key)
    return _Pending(_source(sd[key], template, key, groups), template, key)


def _from(tree: Any, sd: Mapping[str, Any], prefix: Optional[str], ctx: _Context) -> Any:
    if tree is None:
        return None
    if isinstance(tree, NamedArray) or is_jax_array_like(tree):
        return _leaf_from(tree, sd, prefix, ctx)
    if isinstance(tree, Stacked):
        return _stacked_from(tree, sd, prefix, ctx)
    if isinstance(tree, ModuleWithStateDictSerialization):
        if ctx.export and (_overrides(tree, "flatten_for_export") or _overrides(tree, "unflatten_from_export")):
            return _custom_export_from(tree, sd, prefix, ctx)
        if _overrides(tree, "from_state_dict"):
            return tree.from_state_dict(sd, prefix)
    if isinstance(tree, eqx.Module):
        return _module_from(tree, sd, prefix)
    if isinstance(tree, Mapping):
        return type(tree)((k, _from(v, sd, with_prefix(prefix, str(k)), ctx)) for k, v in tree.items())
    if isinstance(tree, (list, tuple)):
        items = [_from(v, sd, with_prefix(prefix, str(i)), ctx) for i, v in enumerate(tree)]
        return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)
    if prefix is not None and prefix in sd and isinstance(tree, (bool, int, float, complex, str)):
        ctx.used.add(prefix)
        return sd[prefix]
    return tree  # other leaves (numbers, functions) keep the template's value


def _module_from(module: eqx.Module, sd: Mapping[str, Any], prefix: Optional[str]) -> eqx.Module:
    ctx = _CTX.get()
    renames = _key_map(module)
    layout = _layout(module) if ctx.export else {}
    changes = {}
    for name in _fields(module):
        value = getattr(module, name)
        key = with_prefix(prefix, renames.get(name, name))
        if name in layout and isinstance(value, NamedArray):
            changes[name] = _leaf_from(value, sd, key, ctx, layout[name])
        else:
            changes[name] = _from(value, sd, key, ctx)
    return _replace(module, changes)


def _abstract(leaf: Any) -> Any:
    if isinstance(leaf, NamedArray):
        return NamedArray(jax.ShapeDtypeStruct(tuple(leaf.array.shape), leaf.array.dtype), leaf.axes)
    if is_jax_array_like(leaf):
        return jax.ShapeDtypeStruct(tuple(leaf.shape), leaf.dtype)
    return leaf


def _is_leafish(x: Any) -> bool:
    return isinstance(x, (NamedArray, _Pending))


def _stacked_from(st: Stacked, sd: Mapping[str, Any], prefix: Optional[str], ctx: _Context) -> Stacked:
    Layers = st.Layers

    def layer_template(leaf):
        leaf = _abstract(leaf)
        if isinstance(leaf, NamedArray):
            if not leaf.has_axis(Layers.name):
                raise ValueError(f"Stacked at {_describe(prefix)}: a parameter with axes {leaf.axis_names} lacks the "
                                 f"Layers axis {Layers.name!r}")
            keep = [a for a in leaf.axes if a.name != Layers.name]
            return NamedArray(jax.ShapeDtypeStruct(tuple(a.size for a in keep), leaf.dtype), keep)
        if isinstance(leaf, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype)
        return leaf

    one = jax.tree_util.tree_map(layer_template, st.stacked, is_leaf=_is_leafish)
    layers = [jax.tree_util.tree_leaves(_from(one, sd, with_prefix(prefix, str(i)), ctx), is_leaf=_is_leafish)
              for i in range(Layers.size)]
    full, treedef = jax.tree_util.tree_flatten(st.stacked, is_leaf=_is_leafish)
    combined = []
    for j, leaf in enumerate(full):
        parts = [layer[j] for layer in layers]
        if isinstance(leaf, NamedArray):
            sources = []
            for p in parts:
                if isinstance(p, _Pending):
                    sources.append(p.source)
                else:  # an overridden from_state_dict gave an array
                    sources.append(_Grouped(_HostArray(p.array), tuple((n,) for n in p.axis_names), p.shape))
            first = parts[0].key if isinstance(parts[0], _Pending) else with_prefix(prefix, "0")
            key = with_prefix(prefix, "*") + first[len(with_prefix(prefix, "0")):]
            combined.append(_Pending(_Stacked(Layers.name, sources, leaf.dtype), leaf, key))
        elif is_jax_array_like(leaf):
            arrays = [np.asarray(_materialize(p, None)) if isinstance(p, _Pending) else np.asarray(p) for p in parts]
            combined.append(np.stack(arrays))
        else:
            combined.append(leaf)
    return _replace(st, {"stacked": jax.tree_util.tree_unflatten(treedef, combined)})


def _custom_export_from(module: Any, sd: Mapping[str, Any], prefix: Optional[str], ctx: _Context) -> Any:
    """A module with its own flatten/unflatten: read its flattened form whole, then unflatten it."""
    dynamic, static = eqx.partition(module, lambda x: is_jax_array_like(x))
    flat_template = jax.eval_shape(lambda d: flatten_modules_for_export(eqx.combine(d, static)), dynamic)
    inner = _Context(False, ctx.used, None, None)
    token = _CTX.set(inner)
    try:
        flat = _finalize(_from(flat_template, sd, prefix, inner), inner)
    finally:
        _CTX.reset(token)
    return unflatten_modules_from_export(flat, module)


def _bounds(index: tuple, names: tuple[str, ...], sizes: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    out = {}
    for n, s in zip(names, index):
        start, stop, step = s.indices(sizes[n])
        if step != 1:
            raise ValueError(f"from_state_dict: a strided block ({s}) of axis {n!r}")
        out[n] = (start, stop)
    return out


def _materialize(p: _Pending, ctx: Optional[_Context]) -> Any:
    template = p.template
    names = _template_names(template)
    sizes = _template_sizes(template)
    shape = tuple(sizes[n] for n in names)
    dtype = template.dtype

    def read(index: tuple) -> np.ndarray:  # a block in one of our aligned buffers: the device array aliases it
        return _device_ready(np.asarray(p.source.read(names, _bounds(index, names, sizes))).astype(dtype, copy=False))

    if ctx is not None and ctx.mapping is not None:
        if isinstance(template, NamedArray):
            spec = _part.pspec_for(names, shape, ctx.mapping, ctx.mesh, what=f"state dict tensor {p.key!r}")
        else:
            spec = PartitionSpec()
        array = jax.make_array_from_callback(shape, NamedSharding(ctx.mesh, spec), read)
    else:
        array = jax.device_put(read(tuple(slice(None) for _ in shape)))
    return NamedArray(array, template.axes) if isinstance(template, NamedArray) else array


def _finalize(tree: Any, ctx: _Context) -> Any:
    def done(x):
        if isinstance(x, _Pending):
            return _materialize(x, ctx)
        if ctx.mapping is not None and isinstance(x, NamedArray) and isinstance(x.array, jax.Array):
            return _part.shard(x, ctx.mapping, ctx.mesh)
        return x

    return jax.tree_util.tree_map(done, tree, is_leaf=_is_leafish)


def _check_unused(sd: Mapping[str, Any], prefix: Optional[str], used: set, strict: bool, what: str) -> None:
    if not strict:
        return
    scope = [k for k in sd if prefix is None or k == prefix or k.startswith(prefix + ".")]
    unused = [k for k in scope if k not in used]
    if unused:
        raise ValueError(f"{what}: {len(unused)} state dict key(s) under {_describe(prefix)} have no place in the "
                         f"template: {unused[:6]}{' ...' if len(unused) > 6 else ''} (strict=False ignores them)")


def from_state_dict(tree: T, state_dict: Mapping[str, Any], prefix: Optional[str] = None, *,
                    mapping: Optional[Mapping[str, Any]] = None, mesh: Optional[Mesh] = None,
                    strict: bool = True) -> T:
    """``tree`` (the template) with every array read from ``state_dict`` by key and by axis name.

    >>> import jax, numpy as np, namax as nx
    >>> Embed, Mlp = nx.make_axes(embed=2, mlp=3)
    >>> template = {"w": nx.zeros((Embed, Mlp))}
    >>> stored = {"w": nx.named(np.arange(6.0).reshape(3, 2), ("mlp", "embed"))}  # another axis order
    >>> from_state_dict(template, stored)["w"].array.tolist()
    [[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]]
    >>> mesh = jax.make_mesh((1,), ("data",))
    >>> from_state_dict(template, stored, mapping={"mlp": "data"}, mesh=mesh)["w"].array.sharding.spec
    P(None, 'data')

    Values may be NamedArrays (placed by name), plain arrays (positional: the template's
    storage order) or :class:`LazyTensor` s (``load_state_dict(path, lazy=True)``; placed
    by the axis names in the file, if any). The template's leaves may be arrays or
    ``jax.ShapeDtypeStruct`` s (``eqx.filter_eval_shape`` of a constructor); values are
    cast to the template's dtypes (float to float, int to int; other casts are errors).

    With an axis mapping (``mapping=``, or an active :func:`namax.axis_mapping` with a
    mesh) every array is made with ``jax.make_array_from_callback`` under the sharding its
    axis names give, each device reading only its block. A missing key, a stored shape or
    axis names that do not fit the template, and (``strict=True``) keys under ``prefix``
    that the template has no place for raise errors naming the key.
    """
    outer = _CTX.get()
    with _restoring(mapping, mesh, strict=strict, export=False) as ctx:
        result = _finalize(_from(tree, state_dict, prefix, ctx), ctx)
        if outer is None:
            _check_unused(state_dict, prefix, ctx.used, strict, "from_state_dict")
    return result


def from_torch_compatible_state_dict(t: T, state_dict: Mapping[str, Any], *, unflatten: bool = True,
                                     prefix: Optional[str] = None, mapping: Optional[Mapping[str, Any]] = None,
                                     mesh: Optional[Mesh] = None, strict: bool = True) -> T:
    """:func:`from_state_dict` for a state dict in PyTorch's layouts (as :func:`to_torch_compatible_state_dict` writes).

    >>> import jax, namax as nx
    >>> Embed, Head, Key = nx.make_axes(embed=4, head=2, key=3)
    >>> proj = nx.nn.Linear.init((Head, Key), Embed, key=jax.random.key(0))
    >>> sd = to_torch_compatible_state_dict(proj)
    >>> sd["weight"].shape
    (4, 6)
    >>> back = from_torch_compatible_state_dict(proj, sd)
    >>> bool((back.weight.array == proj.weight.array).all())
    True

    With ``unflatten=True`` each flattened dimension is split into the template's axes
    while it is read (per device under an axis mapping, as :func:`from_state_dict`).
    """
    outer = _CTX.get()
    with _restoring(mapping, mesh, strict=strict, export=unflatten) as ctx:
        result = _finalize(_from(t, state_dict, prefix, ctx), ctx)
        if outer is None:
            _check_unused(state_dict, prefix, ctx.used, strict, "from_torch_compatible_state_dict")
    return result


# --- files ---------------------------------------------------------------------------------------
def save_state_dict(state_dict: Mapping[str, Any], path: Union[str, os.PathLike], *,
                    metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write ``state_dict`` to a safetensors file (``format: pt``; NamedArrays' axis names in ``namax.axes``).

    >>> import tempfile, os, namax as nx
    >>> with tempfile.TemporaryDirectory() as d:
    ...     save_state_dict({"w": nx.ones(nx.make_axes(embed=2, mlp=3))}, os.path.join(d, "m.safetensors"))
    ...     load_state_dict(os.path.join(d, "m.safetensors"))["w"].axis_names
    ('embed', 'mlp')

    Sharded arrays are gathered to the host; in a multi-process run every process calls
    this and process 0 writes. ``metadata`` adds string entries to the header.
    """
    from safetensors.numpy import save_file

    tensors: dict[str, np.ndarray] = {}
    axes: dict[str, list[str]] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"save_state_dict: keys must be strings, got {key!r}")
        if isinstance(value, NamedArray):
            axes[key] = list(value.axis_names)
            value = value.array
        if isinstance(value, LazyTensor) or (is_jax_array_like(value) and not isinstance(value, jax.ShapeDtypeStruct)):
            tensors[key] = np.asarray(_to_host(value), order="C")  # a host view when it can be (no copy)
        else:
            raise TypeError(f"save_state_dict: the value of key {key!r} is a {type(value).__name__}, not an array")
    header = {"format": "pt", **dict(metadata or {})}
    if axes:
        header[AXES_METADATA_KEY] = json.dumps(axes)
    if jax.process_index() == 0:
        pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=header)


def load_state_dict(path: Union[str, os.PathLike], *, lazy: bool = False) -> Union[StateDict, LazyStateDict]:
    """Read a safetensors file: NamedArrays (NumPy inside) where the file records axis names, else NumPy arrays.

    >>> import tempfile, os, numpy as np
    >>> with tempfile.TemporaryDirectory() as d:
    ...     save_state_dict({"b": np.zeros(3, np.float32)}, os.path.join(d, "m.safetensors"))
    ...     sd = load_state_dict(os.path.join(d, "m.safetensors"))
    >>> type(sd["b"]).__name__, sd["b"].shape
    ('ndarray', (3,))

    ``lazy=True`` reads nothing yet: a :class:`LazyStateDict` whose tensors
    :func:`from_state_dict` reads block by block.
    """
    sd = LazyStateDict(path)
    if lazy:
        return sd
    out: StateDict = {}
    for key, tensor in sd.items():
        array = np.asarray(tensor)
        if tensor.axis_names is not None:
            out[key] = NamedArray(array, tuple(Axis(n, s) for n, s in zip(tensor.axis_names, array.shape)))
        else:
            out[key] = array
    return out


__all__ = [
    "StateDict", "ModuleWithStateDictSerialization", "to_state_dict", "from_state_dict", "to_numpy_state_dict",
    "to_torch_compatible_state_dict", "from_torch_compatible_state_dict", "flatten_modules_for_export",
    "unflatten_modules_from_export", "save_state_dict", "load_state_dict", "with_prefix", "is_jax_array_like",
    "LazyStateDict", "LazyTensor", "AXES_METADATA_KEY",
]
