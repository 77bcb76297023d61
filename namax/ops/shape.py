"""Shape operations by name: rename, broadcast, rearrange, flatten/unflatten, split,
concatenate, stack, unbind, roll, pad."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from ..axis import Axis, AxisSelection, AxisSelector, AxisSpec, axis_name, check_unique, ensure_tuple, merge_axes
from ..named import NamedArray, _axes_str, align, wrap


def rename(x: NamedArray, renames: Mapping[AxisSelector, AxisSelector]) -> NamedArray:
    """Rename axes: ``rename(x, {"position": "key_position"})``; the data is unchanged.

    >>> import namax as nx
    >>> nx.rename(nx.zeros(nx.Axis("position", 4)), {"position": "key_position"}).axes
    (Axis('key_position', 4),)
    """
    table = {}
    for old, new in renames.items():
        name = axis_name(old)
        ax = x.resolve_axis(name)
        if isinstance(new, Axis) and new.size != ax.size:
            raise ValueError(f"rename: axis {name!r} has size {ax.size} but the new axis {new} has size {new.size}")
        table[name] = Axis(axis_name(new), ax.size)
    return wrap(x.array, tuple(table.get(a.name, a) for a in x.axes))


def broadcast_to(x: NamedArray, axes: AxisSelection) -> NamedArray:
    """Broadcast ``x`` to exactly ``axes`` (in that order); every axis of ``x`` must be among them.

    >>> import namax as nx
    >>> B, E = nx.make_axes(batch=2, embed=3)
    >>> nx.broadcast_to(nx.arange(E), (E, B)).array.tolist()
    [[0, 0], [1, 1], [2, 2]]
    """
    axes = tuple(x.resolve_axis(a) if isinstance(a, str) else a for a in ensure_tuple(axes))
    merge_axes(x.axes, axes, what="array and target axes")
    raw = align(x, axes)
    return wrap(jnp.broadcast_to(raw, tuple(a.size for a in axes)), axes)


def broadcast_axis(x: NamedArray, axis: Axis | Sequence[Axis]) -> NamedArray:
    """Add new axes in front of ``x``'s (axes ``x`` already has are left in place).

    >>> import namax as nx
    >>> Pos, KPos = nx.Axis("position", 3), nx.Axis("key_position", 3)
    >>> nx.arange(Pos).broadcast_axis(KPos).axes
    (Axis('key_position', 3), Axis('position', 3))
    """
    new = tuple(a for a in ensure_tuple(axis) if not x.has_axis(a))
    for a in ensure_tuple(axis):
        if not isinstance(a, Axis):
            raise TypeError(f"broadcast_axis needs Axis objects (with sizes), got {a!r}")
        if x.has_axis(a):
            x.axis_index(a)  # size check
    return broadcast_to(x, new + x.axes)


def _resolve_new_axis(new_axis: AxisSelector, size: int, what: str) -> Axis:
    """``new_axis`` as an Axis of ``size``; an Axis given with another size is an error."""
    if isinstance(new_axis, Axis):
        if new_axis.size != size:
            raise ValueError(f"{what}: the new axis {new_axis} must have size {size}, got {new_axis.size}")
        return new_axis
    return Axis(axis_name(new_axis), size)


def rearrange(x: NamedArray, axes: Sequence[AxisSelector | type(Ellipsis)]) -> NamedArray:
    """Permute ``x``'s axes into the order of ``axes``; ``...`` stands for the rest, in order.

    >>> import namax as nx
    >>> B, P, E = nx.make_axes(batch=2, position=3, embed=4)
    >>> nx.rearrange(nx.zeros((B, P, E)), ("embed", ..., "batch")).axis_names
    ('embed', 'position', 'batch')
    """
    spec = tuple(axes)
    if sum(1 for a in spec if a is Ellipsis) > 1:
        raise ValueError(f"rearrange: at most one '...' allowed, got {spec!r}")
    named_spec = [a for a in spec if a is not Ellipsis]
    check_unique(named_spec, what="rearrange's axes")
    positions = [x.axis_index(a) for a in named_spec]
    if Ellipsis in spec:
        chosen = set(positions)
        rest = [i for i in range(x.ndim) if i not in chosen]
        cut = spec.index(Ellipsis)
        order = positions[:cut] + rest + positions[cut:]
    else:
        if len(positions) != x.ndim:
            missing = [a.name for i, a in enumerate(x.axes) if i not in set(positions)]
            raise ValueError(
                f"rearrange: axes {missing} of {_axes_str(x.axes)} are not placed; list them or use '...'"
            )
        order = positions
    array = x.array if order == list(range(x.ndim)) else jnp.transpose(x.array, order)
    return wrap(array, tuple(x.axes[i] for i in order))


def flatten_axes(x: NamedArray, old_axes: AxisSelection, new_axis: AxisSelector) -> NamedArray:
    """Merge ``old_axes`` into one ``new_axis``, row-major in the order given.

    The new axis sits where the earliest (in ``x``) of the old axes was; ``new_axis`` may be
    a name or an Axis whose size is the product of the old sizes.

    >>> import namax as nx
    >>> B, P, E = nx.make_axes(batch=2, position=3, embed=4)
    >>> nx.flatten_axes(nx.zeros((B, P, E)), ("batch", "embed"), "token").axes
    (Axis('token', 8), Axis('position', 3))
    """
    old = ensure_tuple(old_axes)
    if not old:
        raise ValueError("flatten_axes: old_axes is empty")
    check_unique(old, what="flatten_axes's old_axes")
    idx = [x.axis_index(a) for a in old]
    size = math.prod(x.axes[i].size for i in idx)
    new = _resolve_new_axis(new_axis, size, "flatten_axes")
    rest = [i for i in range(x.ndim) if i not in set(idx)]
    if new.name in {x.axes[i].name for i in rest}:
        raise ValueError(f"flatten_axes: new axis name {new.name!r} is already an axis of {_axes_str(x.axes)}")
    cut = sum(1 for i in rest if i < min(idx))
    order = rest[:cut] + idx + rest[cut:]
    array = x.array if order == list(range(x.ndim)) else jnp.transpose(x.array, order)
    kept = [x.axes[i] for i in rest]
    out_axes = tuple(kept[:cut] + [new] + kept[cut:])
    return wrap(jnp.reshape(array, tuple(a.size for a in out_axes)), out_axes)


def unflatten_axis(x: NamedArray, axis: AxisSelector, new_axes: AxisSpec) -> NamedArray:
    """Split one axis into ``new_axes`` (row-major), in its place; sizes must multiply to its size.

    >>> import namax as nx
    >>> T = nx.Axis("token", 6)
    >>> nx.unflatten_axis(nx.arange(T), "token", nx.make_axes(batch=2, position=3)).axes
    (Axis('batch', 2), Axis('position', 3))
    """
    i = x.axis_index(axis)
    new = ensure_tuple(new_axes)
    for a in new:
        if not isinstance(a, Axis):
            raise TypeError(f"unflatten_axis needs Axis objects (with sizes) for new_axes, got {a!r}")
    old = x.axes[i]
    if math.prod(a.size for a in new) != old.size:
        raise ValueError(
            f"unflatten_axis: new axes {_axes_str(new)} have {math.prod(a.size for a in new)} elements "
            f"but axis {old.name!r} has size {old.size}"
        )
    out_axes = x.axes[:i] + new + x.axes[i + 1 :]
    check_unique(out_axes, what="unflatten_axis's result")
    return wrap(jnp.reshape(x.array, tuple(a.size for a in out_axes)), out_axes)


def split(x: NamedArray, axis: AxisSelector, new_axes: Sequence[Axis]) -> list[NamedArray]:
    """Cut ``axis`` into consecutive pieces, one per new axis (whose sizes sum to its size).

    >>> import namax as nx
    >>> a, b = nx.split(nx.arange(nx.Axis("x", 5)), "x", [nx.Axis("head", 2), nx.Axis("tail", 3)])
    >>> a.array.tolist(), b.axes
    ([0, 1], (Axis('tail', 3),))
    """
    i = x.axis_index(axis)
    new = list(new_axes)
    for a in new:
        if not isinstance(a, Axis):
            raise TypeError(f"split needs Axis objects (with sizes) for new_axes, got {a!r}")
    total = sum(a.size for a in new)
    if total != x.axes[i].size:
        raise ValueError(
            f"split: new axes {_axes_str(new)} have sizes summing to {total} "
            f"but axis {x.axes[i].name!r} has size {x.axes[i].size}"
        )
    pieces = []
    start = 0
    for a in new:
        piece = jax.lax.slice_in_dim(x.array, start, start + a.size, axis=i)
        out_axes = x.axes[:i] + (a,) + x.axes[i + 1 :]
        check_unique(out_axes, what="split's result")
        pieces.append(wrap(piece, out_axes))
        start += a.size
    return pieces


def _same_axes(arrays: Sequence[NamedArray], skip: str | None, what: str) -> None:
    """Every array has the axes of the first (sizes too), ignoring the axis ``skip``."""
    first = arrays[0]
    ref = {a.name: a.size for a in first.axes if a.name != skip}
    for k, arr in enumerate(arrays[1:], start=1):
        if not isinstance(arr, NamedArray):
            raise TypeError(f"{what}: argument {k} is a {type(arr).__name__}, not a NamedArray")
        other = {a.name: a.size for a in arr.axes if a.name != skip}
        if other != ref:
            raise ValueError(
                f"{what}: array {k} has axes {_axes_str(arr.axes)} but array 0 has {_axes_str(first.axes)}"
                + (f" (apart from {skip!r})" if skip else "")
            )


def concatenate(axis: AxisSelector, arrays: Sequence[NamedArray]) -> NamedArray:
    """Join ``arrays`` along the axis named ``axis``; their other axes must agree (any order).

    The result's axis is ``axis``: an Axis must have the summed size, a name takes it.

    >>> import namax as nx
    >>> a, b = nx.arange(nx.Axis("x", 2)), nx.arange(nx.Axis("x", 3))
    >>> nx.concatenate("x", [a, b]).array.tolist()
    [0, 1, 0, 1, 2]
    """
    arrays = list(arrays)
    if not arrays:
        raise ValueError("concatenate: no arrays given")
    if not isinstance(arrays[0], NamedArray):
        raise TypeError(f"concatenate: argument 0 is a {type(arrays[0]).__name__}, not a NamedArray")
    name = axis_name(axis)
    for k, arr in enumerate(arrays):
        if isinstance(arr, NamedArray) and not arr.has_axis(name):
            raise ValueError(f"concatenate: array {k} with axes {_axes_str(arr.axes)} has no axis {name!r}")
    _same_axes(arrays, name, "concatenate")
    order = arrays[0].axis_names
    raws = [rearrange(a, order).array if a.axis_names != order else a.array for a in arrays]
    i = arrays[0].axis_index(name)
    total = sum(a.axis_size(name) for a in arrays)
    new = _resolve_new_axis(axis, total, "concatenate")
    out_axes = arrays[0].axes[:i] + (new,) + arrays[0].axes[i + 1 :]
    return wrap(jnp.concatenate(raws, axis=i), out_axes)


def stack(axis: AxisSelector, arrays: Sequence[NamedArray]) -> NamedArray:
    """Stack same-axis arrays along a new leading ``axis`` (of size ``len(arrays)``).

    >>> import namax as nx
    >>> E = nx.Axis("embed", 3)
    >>> nx.stack("layer", [nx.zeros(E), nx.ones(E)]).axes
    (Axis('layer', 2), Axis('embed', 3))
    """
    arrays = list(arrays)
    if not arrays:
        raise ValueError("stack: no arrays given")
    if not isinstance(arrays[0], NamedArray):
        raise TypeError(f"stack: argument 0 is a {type(arrays[0]).__name__}, not a NamedArray")
    _same_axes(arrays, None, "stack")
    new = _resolve_new_axis(axis, len(arrays), "stack")
    if arrays[0].has_axis(new.name):
        raise ValueError(f"stack: axis {new.name!r} is already an axis of the arrays {_axes_str(arrays[0].axes)}")
    order = arrays[0].axis_names
    raws = [rearrange(a, order).array if a.axis_names != order else a.array for a in arrays]
    return wrap(jnp.stack(raws, axis=0), (new,) + arrays[0].axes)


def unbind(x: NamedArray, axis: AxisSelector) -> list[NamedArray]:
    """The slices of ``x`` along ``axis``, each without that axis.

    >>> import namax as nx
    >>> QKV, E = nx.make_axes(qkv=3, embed=2)
    >>> q, k, v = nx.zeros((QKV, E)).unbind("qkv")
    >>> q.axes
    (Axis('embed', 2),)
    """
    i = x.axis_index(axis)
    rest = x.axes[:i] + x.axes[i + 1 :]
    return [wrap(jax.lax.index_in_dim(x.array, k, axis=i, keepdims=False), rest) for k in range(x.axes[i].size)]


def roll(x: NamedArray, shift: Any, axis: AxisSelection) -> NamedArray:
    """``jnp.roll`` along named axes (``shift`` an int, traced int, or one per axis).

    >>> import namax as nx
    >>> nx.roll(nx.arange(nx.Axis("x", 4)), 1, "x").array.tolist()
    [3, 0, 1, 2]
    """
    dims = tuple(x.axis_index(a) for a in ensure_tuple(axis))
    if isinstance(shift, (tuple, list)) and len(shift) != len(dims):
        raise ValueError(f"roll: {len(shift)} shifts given for {len(dims)} axes {ensure_tuple(axis)!r}")
    return wrap(jnp.roll(x.array, shift, axis=dims), x.axes)


def pad(
    x: NamedArray,
    pad_width: Mapping[AxisSelector, int | tuple[int, int]],
    mode: str = "constant",
    constant_values: Any = 0,
) -> NamedArray:
    """``jnp.pad`` by name: ``pad(x, {"position": (1, 2)})``; unlisted axes are not padded.

    A width is ``(before, after)`` or one int for both. Padded axes keep their names with
    the new sizes. ``mode`` is any ``jnp.pad`` mode; ``constant_values`` applies to "constant".

    >>> import namax as nx
    >>> nx.pad(nx.arange(nx.Axis("x", 2)), {"x": (1, 0)}).array.tolist()
    [0, 0, 1]
    """
    widths = [(0, 0)] * x.ndim
    for ax, w in pad_width.items():
        i = x.axis_index(ax)
        pair = (w, w) if isinstance(w, int) else tuple(w)
        if len(pair) != 2 or not all(isinstance(p, int) and p >= 0 for p in pair):
            raise ValueError(f"pad: width for axis {axis_name(ax)!r} must be an int >= 0 or (before, after), got {w!r}")
        widths[i] = pair
    kwargs = {"constant_values": constant_values} if mode == "constant" else {}
    out = jnp.pad(x.array, widths, mode=mode, **kwargs)
    out_axes = tuple(a.resize(a.size + lo + hi) for a, (lo, hi) in zip(x.axes, widths))
    return wrap(out, out_axes)


__all__ = [
    "rename", "broadcast_to", "broadcast_axis", "rearrange", "flatten_axes", "unflatten_axis",
    "split", "concatenate", "stack", "unbind", "roll", "pad",
]
