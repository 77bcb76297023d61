"""Indexing by name: ``x["position", 3]``, ``x[{"head": 0}]``, ``x["vocab", ids]``, take,
slice, updated_slice.

Index values, per axis:

- a Python int: picks one entry and drops the axis (checked against the axis size);
- a Python slice (static, steps allowed): keeps the axis with its new size;
- ``dslice(start, size)`` (alias ``ds``): a slice whose start may be traced, of static size;
- an integer jax scalar or tracer: picks one entry dynamically (works under ``jit``);
- a NamedArray of integers: advanced indexing by name. The indexed axis is replaced by the
  index's axes, in its place. Several index arrays broadcast together by name. An index axis
  that ``x`` also has (and that is not being indexed) is matched, not crossed:
  ``logp["vocab", targets]`` with ``logp: (batch, position, vocab)`` and
  ``targets: (batch, position)`` gives ``(batch, position)``, like ``take_along_axis``.

Dynamic indices follow ``jnp``: negatives count from the end, out-of-range ones are clamped.
"""

from __future__ import annotations

import builtins
import dataclasses
import numbers
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ..axis import Axis, AxisSelector, axis_name, merge_axes
from ..named import NamedArray, _axes_str, align, wrap


@dataclasses.dataclass(frozen=True)
class dslice:
    """A slice of static ``size`` whose ``start`` may be traced: ``x["position", ds(i, 4)]``.

    Like ``lax.dynamic_slice``, a start that would run past the end is clamped.

    >>> import jax, jax.numpy as jnp, namax as nx
    >>> x = nx.arange(nx.Axis("position", 6))
    >>> jax.jit(lambda x, i: x["position", nx.ds(i, 2)])(x, jnp.int32(3)).array.tolist()
    [3, 4]
    >>> x["position", nx.ds(5, 2)].array.tolist()  # clamped
    [4, 5]
    """

    start: Any
    size: int

    def __post_init__(self) -> None:
        if not isinstance(self.size, numbers.Integral) or self.size < 0:
            raise TypeError(f"dslice: size must be a static int >= 0, got {self.size!r}")


ds = dslice


def _is_int_scalar_array(v: Any) -> bool:
    return (
        isinstance(v, (jax.Array, np.ndarray, np.generic))
        and np.ndim(v) == 0
        and jnp.issubdtype(v.dtype, jnp.integer)
    )


def _pairs(x: NamedArray, idx: Any) -> list[tuple[str, Any]]:
    """Normalise a ``__getitem__`` argument into (axis name, index value) pairs."""
    if isinstance(idx, Mapping):
        items = list(idx.items())
    elif isinstance(idx, tuple):
        if len(idx) % 2:
            raise TypeError(
                f"Index {idx!r} has an odd number of entries: index a NamedArray with (axis, index) pairs, "
                f"e.g. x['{x.axis_names[0] if x.ndim else 'axis'}', 0]"
            )
        items = list(zip(idx[::2], idx[1::2]))
    elif isinstance(idx, (str, Axis)):
        raise TypeError(f"Index {idx!r} names an axis but gives no index: write x[{axis_name(idx)!r}, i]")
    else:
        raise TypeError(
            f"Positional index {idx!r}: NamedArrays are indexed by axis name, e.g. x['axis', i] or "
            f"x[{{'axis': i}}]; the array has axes {_axes_str(x.axes)}"
        )
    seen: set[str] = set()
    out = []
    for key, value in items:
        if not isinstance(key, (str, Axis)):
            raise TypeError(
                f"Positional index {key!r}: NamedArrays are indexed by axis name, e.g. x['axis', i]; "
                f"the array has axes {_axes_str(x.axes)}"
            )
        name = axis_name(key)
        x.axis_index(key)  # unknown axis / size mismatch
        if name in seen:
            raise ValueError(f"Axis {name!r} indexed twice")
        seen.add(name)
        out.append((name, value))
    return out


def _static_slice_len(s: builtins.slice, size: int, name: str) -> int:
    for part in (s.start, s.stop, s.step):
        if part is not None and not isinstance(part, numbers.Integral):
            raise TypeError(
                f"Slice {s!r} on axis {name!r}: slice bounds must be static ints; "
                "use namax.dslice(start, size) for a traced start"
            )
    if s.step == 0:
        raise ValueError(f"Slice {s!r} on axis {name!r}: step must not be zero")
    return len(range(*s.indices(size)))


def index(x: NamedArray, idx: Any) -> NamedArray:
    """``x[idx]`` by name: ``(axis, index)`` pairs or a dict (see the module docstring).

    >>> import namax as nx
    >>> B, P = nx.make_axes(batch=2, position=5)
    >>> x = nx.zeros((B, P))
    >>> x["position", 3].axes, x["batch", 1, "position", 1:4].axes
    ((Axis('batch', 2),), (Axis('position', 3),))
    """
    basic: list[Any] = [builtins.slice(None)] * x.ndim
    dynamic: dict[str, dslice] = {}
    advanced: dict[str, NamedArray] = {}
    for name, v in _pairs(x, idx):
        i = x.axis_index(name)
        size = x.axes[i].size
        if isinstance(v, (bool, np.bool_)):
            raise TypeError(f"Index for axis {name!r} is a bool; boolean masks are not supported, use namax.where")
        if isinstance(v, numbers.Integral):
            v = int(v)
            if not -size <= v < size:
                raise IndexError(f"Index {v} is out of range for axis {name!r} of size {size}")
            basic[i] = v % size
        elif isinstance(v, builtins.slice):
            _static_slice_len(v, size, name)
            basic[i] = v
        elif isinstance(v, dslice):
            if v.size > size:
                raise IndexError(f"dslice of size {v.size} is larger than axis {name!r} of size {size}")
            dynamic[name] = v
        elif isinstance(v, NamedArray):
            if not jnp.issubdtype(v.dtype, jnp.integer):
                raise TypeError(f"Index array for axis {name!r} must have an integer dtype, got {v.dtype}")
            advanced[name] = v
        elif _is_int_scalar_array(v):
            advanced[name] = NamedArray(jnp.asarray(v), ())
        elif hasattr(v, "shape"):
            raise TypeError(
                f"Index for axis {name!r} is an unnamed array of shape {np.shape(v)} and dtype {v.dtype}; "
                "use an integer scalar or a NamedArray of integers (namax.named(ids, axes))"
            )
        else:
            raise TypeError(f"Unsupported index {v!r} for axis {name!r}")

    array, axes = x.array, x.axes
    if any(not (isinstance(b, builtins.slice) and b == builtins.slice(None)) for b in basic):
        array = array[tuple(basic)]
        new_axes = []
        for ax, b in zip(axes, basic):
            if isinstance(b, builtins.slice):
                new_axes.append(ax.resize(_static_slice_len(b, ax.size, ax.name)))
        axes = tuple(new_axes)
    for name, d in dynamic.items():
        i = [a.name for a in axes].index(name)
        array = jax.lax.dynamic_slice_in_dim(array, d.start, d.size, axis=i)
        axes = axes[:i] + (axes[i].resize(d.size),) + axes[i + 1 :]
    if advanced:
        array, axes = _advanced(array, axes, advanced)
    return wrap(array, axes)


_index = index  # ``take``'s parameter is called ``index``, as in Haliax


def _advanced(array: jax.Array, axes: tuple[Axis, ...], indices: dict[str, NamedArray]):
    """Gather with NamedArray indices (see the module docstring); returns (array, axes)."""
    index_axes = merge_axes(*(v.axes for v in indices.values()), what="index arrays")
    own = {a.name: a for a in axes}
    indices = dict(indices)
    for a in index_axes:
        if a.name in own and a.name not in indices:
            if own[a.name].size != a.size:
                raise ValueError(
                    f"Index arrays have axis {a.name!r} of size {a.size} but the indexed array has it with "
                    f"size {own[a.name].size} (axes {_axes_str(axes)})"
                )
            indices[a.name] = NamedArray(jnp.arange(a.size), (a,))
    names = [a.name for a in axes]
    dims = sorted(names.index(n) for n in indices)
    rest = [i for i in range(len(axes)) if i not in set(dims)]
    cut = sum(1 for i in rest if i < dims[0])
    order = rest[:cut] + dims + rest[cut:]
    if order != list(range(len(axes))):
        array = jnp.transpose(array, order)
    raw = tuple(align(indices[names[d]], index_axes) for d in dims)
    out = array[(builtins.slice(None),) * cut + raw]
    kept = [axes[i] for i in rest]
    return out, tuple(kept[:cut]) + tuple(index_axes) + tuple(kept[cut:])


def take(x: NamedArray, axis: AxisSelector, index: Any) -> NamedArray:
    """``x`` indexed along one axis: an int, an integer scalar array, or a NamedArray of ints.

    >>> import jax.numpy as jnp, namax as nx
    >>> Vocab, Embed, Pos = nx.make_axes(vocab=10, embed=4, position=3)
    >>> ids = nx.named(jnp.array([1, 5, 2]), Pos)
    >>> nx.take(nx.zeros((Vocab, Embed)), "vocab", ids).axes
    (Axis('position', 3), Axis('embed', 4))
    """
    return _index(x, {axis_name(axis): index})


def _check_start(start: Any, name: str) -> Any:
    if isinstance(start, (bool, np.bool_)):
        raise TypeError(f"Start for axis {name!r} must be an integer, got {start!r}")
    if isinstance(start, numbers.Integral):
        return int(start)
    if _is_int_scalar_array(start):
        return start
    raise TypeError(f"Start for axis {name!r} must be an int or an integer scalar array, got {start!r}")


def slice(
    x: NamedArray,
    axis: Optional[AxisSelector] = None,
    new_axis: Optional[AxisSelector] = None,
    start: Any = 0,
    length: Any = None,
) -> NamedArray:
    """A contiguous block of ``x``, by name, in either of Haliax's two forms.

    One axis: ``slice(x, "position", start=i, length=4)`` (``new_axis`` optionally renames the
    sliced axis; an Axis there also gives the length). Several axes: ``slice(x, start={"position":
    i, "head": 0}, length={"position": 4, "head": 2})``. Starts may be traced (then, as in
    ``lax.dynamic_slice``, a block that would run past the end is moved back in range); lengths
    are static and default to "to the end" when the start is static.

    >>> import namax as nx
    >>> x = nx.arange(nx.Axis("position", 6))
    >>> nx.slice(x, "position", start=2, length=3).array.tolist()
    [2, 3, 4]
    """
    if isinstance(start, Mapping):
        if axis is not None or new_axis is not None:
            raise TypeError("slice: give either axis= (one axis) or a start= mapping, not both")
        if length is not None and not isinstance(length, Mapping):
            raise TypeError("slice: with a start= mapping, length= must be a mapping too")
        starts = {axis_name(k): v for k, v in start.items()}
        lengths = {axis_name(k): v for k, v in (length or {}).items()}
        renames: dict[str, AxisSelector] = {}
    else:
        if axis is None:
            raise TypeError("slice: give the axis to slice, or start= as a mapping {axis: start}")
        name = axis_name(axis)
        if length is None and isinstance(new_axis, Axis):
            length = new_axis.size
        starts, lengths = {name: start}, ({} if length is None else {name: length})
        renames = {} if new_axis is None else {name: new_axis}
    for name in lengths:
        if name not in starts:
            starts[name] = 0
    array, axes = x.array, list(x.axes)
    for name, s in starts.items():
        i = x.axis_index(name)
        size = axes[i].size
        s = _check_start(s, name)
        n = lengths.get(name)
        if n is None:
            if not isinstance(s, int):
                raise TypeError(f"slice: a traced start on axis {name!r} needs a static length")
            n = size - s
        if not isinstance(n, numbers.Integral) or n < 0:
            raise TypeError(f"slice: length for axis {name!r} must be a static int >= 0, got {n!r}")
        n = int(n)
        if n > size:
            raise IndexError(f"slice: length {n} is larger than axis {name!r} of size {size}")
        if isinstance(s, int):
            if not 0 <= s <= size - n:
                raise IndexError(f"slice: start {s} with length {n} is out of range for axis {name!r} of size {size}")
            array = jax.lax.slice_in_dim(array, s, s + n, axis=i)
        else:
            array = jax.lax.dynamic_slice_in_dim(array, s, n, axis=i)
        new = renames.get(name, name)
        if isinstance(new, Axis) and new.size != n:
            raise ValueError(f"slice: new axis {new} does not have the slice length {n}")
        axes[i] = Axis(axis_name(new), n)
    return wrap(array, axes)


def updated_slice(x: NamedArray, start: Mapping[AxisSelector, Any], update: NamedArray) -> NamedArray:
    """``x`` with the block at ``start`` replaced by ``update`` (``lax.dynamic_update_slice`` by name).

    ``update``'s axes are a subset of ``x``'s (by name), no larger; an axis of ``x`` that
    ``update`` lacks is written at one position (its start). Unlisted starts are 0; traced
    starts are clamped like ``lax.dynamic_update_slice``.

    >>> import namax as nx
    >>> L, P = nx.make_axes(layer=2, position=4)
    >>> cache = nx.zeros((L, P))
    >>> nx.updated_slice(cache, {"layer": 1, "position": 2}, nx.ones(P.resize(2))).array.tolist()
    [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]
    """
    if not isinstance(update, NamedArray):
        raise TypeError(f"updated_slice: update must be a NamedArray, got {type(update).__name__}")
    names = x.axis_names
    for a in update.axes:
        if a.name not in names:
            raise ValueError(
                f"updated_slice: update axis {a.name!r} is not an axis of the array {_axes_str(x.axes)}"
            )
        if a.size > x.axis_size(a.name):
            raise ValueError(
                f"updated_slice: update axis {a.name!r} has size {a.size}, larger than the array's {x.axis_size(a.name)}"
            )
    starts: list[Any] = [0] * x.ndim
    for key, s in start.items():
        name = axis_name(key)
        i = x.axis_index(name)
        s = _check_start(s, name)
        if isinstance(s, int):
            n = update.axis_size(name) if update.has_axis(name) else 1
            if not 0 <= s <= x.axes[i].size - n:
                raise IndexError(
                    f"updated_slice: start {s} with update size {n} is out of range for axis {name!r} "
                    f"of size {x.axes[i].size}"
                )
        starts[i] = s
    raw = align(update, [Axis(a.name, update.axis_size(a.name) if update.has_axis(a.name) else 1) for a in x.axes])
    return wrap(jax.lax.dynamic_update_slice(x.array, raw.astype(x.dtype), starts), x.axes)


__all__ = ["index", "take", "slice", "updated_slice", "dslice", "ds"]
