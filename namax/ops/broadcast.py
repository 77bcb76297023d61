"""Haliax's public ``broadcast_arrays``: NamedArrays in, NamedArrays out.

(:func:`namax.named.broadcast_arrays` is the internal helper the elementwise ops use: it
returns raw aligned arrays.)

>>> import namax as nx
>>> B, E = nx.make_axes(batch=2, embed=3)
>>> [a.axes for a in broadcast_arrays(nx.ones(E), nx.ones((B, E)))]
[(Axis('batch', 2), Axis('embed', 3)), (Axis('batch', 2), Axis('embed', 3))]
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp

from ..axis import Axis
from ..named import NamedArray, _axes_str, is_scalarish, named
from .shape import broadcast_to


def _union(big: tuple[Axis, ...], small: tuple[Axis, ...], require_subset: bool) -> tuple[Axis, ...]:
    """The axes two arrays broadcast to: the bigger's, with the smaller's extra axes in front."""
    sizes = {a.name: a.size for a in big}
    for a in small:
        if a.name in sizes and sizes[a.name] != a.size:
            raise ValueError(f"broadcast_arrays: axis {a.name!r} has size {sizes[a.name]} in one array and size "
                             f"{a.size} in another ({_axes_str(big)} and {_axes_str(small)})")
    if big == small or not small:
        return big
    if not big:
        return small
    big_names, small_names = {a.name for a in big}, {a.name for a in small}
    if require_subset:
        if small_names <= big_names:
            return big
        if big_names <= small_names:
            return small
        raise ValueError(f"broadcast_arrays: neither of the axes {_axes_str(big)} and {_axes_str(small)} contains "
                         "the other (pass require_subset=False to broadcast to their union)")
    if math.prod(a.size for a in big) < math.prod(a.size for a in small):
        big, small = small, big
        big_names = small_names
    return tuple(a for a in small if a.name not in big_names) + big


def _is_subsequence(needle: tuple, haystack: tuple) -> bool:
    it = iter(haystack)
    return all(any(n == h for h in it) for n in needle)


def broadcast_arrays(*arrays: Any, require_subset: bool = True, ensure_order: bool = True) -> tuple:
    """Broadcast NamedArrays to their common axes, by name; scalars and None pass through.

    The common axes are those of the biggest array (by element count). With
    ``require_subset`` (the default) every array's axes must be among one array's axes;
    ``require_subset=False`` allows any union, putting a smaller array's extra axes in
    front. ``ensure_order`` puts every result's axes in the common order; without it an
    array keeps its own order, with its new axes in front. A lone scalar becomes a 0-d
    NamedArray; a plain array with dimensions is an error (name it first).

    >>> import namax as nx
    >>> B, E, M = nx.make_axes(batch=2, embed=3, mlp=4)
    >>> x, bias, s = broadcast_arrays(nx.ones((B, E)), nx.ones(E), 2.0)
    >>> bias.axes, s
    ((Axis('batch', 2), Axis('embed', 3)), 2.0)
    >>> [a.axes for a in broadcast_arrays(nx.ones(M), nx.ones((B, E)), require_subset=False)]
    [(Axis('mlp', 4), Axis('batch', 2), Axis('embed', 3)), (Axis('mlp', 4), Axis('batch', 2), Axis('embed', 3))]
    """
    for a in arrays:
        if a is not None and not isinstance(a, NamedArray) and not is_scalarish(a):
            raise TypeError(f"broadcast_arrays: got an unnamed {type(a).__name__} of shape "
                            f"{getattr(a, 'shape', None)}; name its axes first (namax.named(array, axes)), only "
                            "scalars broadcast implicitly")
    if len(arrays) == 1 and arrays[0] is not None and not isinstance(arrays[0], NamedArray):
        return (named(jnp.asarray(arrays[0]), ()),)
    named_arrays = [a for a in arrays if isinstance(a, NamedArray)]
    if not named_arrays:
        return tuple(arrays)
    by_size = sorted(named_arrays, key=lambda a: a.size, reverse=True)
    full = by_size[0].axes
    for a in by_size[1:]:
        full = _union(full, a.axes, require_subset)

    def fit(a: Any) -> Any:
        if not isinstance(a, NamedArray):
            return a
        new = tuple(ax for ax in full if not a.has_axis(ax.name))
        target = new + a.axes
        if ensure_order and not _is_subsequence(full, target):
            target = full
        return a if target == a.axes else broadcast_to(a, target)

    return tuple(fit(a) for a in arrays)


__all__ = ["broadcast_arrays"]
