"""Shape operations by name: rename, broadcast, rearrange, flatten/unflatten, split, stack."""

from __future__ import annotations

from typing import Mapping, Sequence

import jax.numpy as jnp

from ..axis import Axis, AxisSelection, AxisSelector, axis_name, ensure_tuple, merge_axes
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
    """Broadcast ``x`` to exactly ``axes`` (in that order); every axis of ``x`` must be among them."""
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
__all__ = ["rename", "broadcast_to", "broadcast_axis"]
