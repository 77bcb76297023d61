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

Negative indices and starts count from the end, as in Python (``x["position", -1]`` is the
last entry). Out-of-range indices are never clamped silently:

- a *concrete* index (a Python or numpy int, a concrete jax array, a NamedArray holding one)
  that is out of range raises an ``IndexError`` naming the axis, its size and the index;
- a *traced* index (under ``jit``) cannot be checked, so ``mode=`` (on :func:`index`,
  :func:`take`, :func:`slice`, :func:`updated_slice`) says what happens, like ``jnp.take``'s:

  ``None`` (the default)
      concrete indices are checked; traced out-of-range positions read the fill value
      (gathers and slices) or are dropped (``updated_slice``).
  ``"fill"``
      out-of-range positions read ``fill_value``, concrete ones included (no error). The
      default fill is ``jnp.take``'s: NaN for floats, the most negative value for signed
      ints, the largest value for unsigned ints, ``True`` for bools.
  ``"drop"`` (``updated_slice`` only)
      the part of the update that falls outside the array is not written (no error).
  ``"clip"``
      indices and starts are clamped into range (``lax.dynamic_slice``'s rule), concrete
      ones included (no error).
  ``"promise_in_bounds"``
      the caller promises traced indices are in range (the cheapest code: out-of-range
      traced indices give unspecified values); concrete ones are still checked.

``x[...]`` uses the default.
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

    A negative start counts from the end. A concrete start whose block would run past the end
    raises an ``IndexError``; under ``jit`` the positions past the end read the fill value
    (see the module docstring; ``namax.index(x, ..., mode="clip")`` clamps instead).

    >>> import jax, jax.numpy as jnp, namax as nx
    >>> x = nx.arange(nx.Axis("position", 6)).astype(jnp.float32)
    >>> jax.jit(lambda x, i: x["position", nx.ds(i, 2)])(x, jnp.int32(3)).array.tolist()
    [3.0, 4.0]
    >>> jax.jit(lambda x, i: x["position", nx.ds(i, 2)])(x, jnp.int32(5)).array.tolist()
    [5.0, nan]
    >>> x["position", nx.ds(5, 2)]
    Traceback (most recent call last):
    ...
    IndexError: dslice(5, 2) is out of range for axis 'position' of size 6
    """

    start: Any
    size: int

    def __post_init__(self) -> None:
        if isinstance(self.size, (bool, np.bool_)) or not isinstance(self.size, numbers.Integral) or self.size < 0:
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


_READ_MODES = (None, "fill", "clip", "promise_in_bounds")
_WRITE_MODES = (None, "drop", "clip", "promise_in_bounds")


def _check_mode(mode: Any, allowed: tuple, what: str) -> None:
    if mode not in allowed:
        raise ValueError(f"{what}: mode must be one of {allowed}, got {mode!r}")


def _is_traced(v: Any) -> bool:
    return isinstance(v, jax.core.Tracer)


def _default_fill(dtype: Any) -> Any:
    """``jnp.take``'s fill: NaN (inexact), most negative (signed), largest (unsigned), True (bool)."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.inexact):
        return np.nan
    if dtype == jnp.bool_:
        return True
    return jnp.iinfo(dtype).min if jnp.issubdtype(dtype, jnp.signedinteger) else jnp.iinfo(dtype).max


def _check_index_values(v: NamedArray, name: str, size: int) -> None:
    """An IndexError for the first out-of-range entry of a concrete index array (traced: nothing)."""
    if _is_traced(v.array):
        return
    a = np.asarray(v.array)
    bad = (a < -size) | (a >= size)
    if not bad.any():
        return
    pos = tuple(int(p) for p in np.unravel_index(int(np.argmax(bad)), a.shape))
    where = f" (at {dict(zip(v.axis_names, pos))} of the index array with axes {_axes_str(v.axes)})" if v.axes else ""
    raise IndexError(f"Index {a[pos]} is out of range for axis {name!r} of size {size}{where}")


def _static_start(s: int, n: int, size: int, name: str, what: str) -> int:
    """A concrete start of a block of ``n``, negatives counted from the end, checked against ``size``."""
    t = s + size if s < 0 else s
    if not 0 <= t <= size - n:
        raise IndexError(f"{what} is out of range for axis {name!r} of size {size}")
    return t


def _read_block(array: jax.Array, i: int, start: Any, n: int, mode: Any, fill_value: Any) -> jax.Array:
    """``n`` entries of dim ``i`` from ``start`` (an int already checked, or traced) under ``mode``."""
    size = array.shape[i]
    if isinstance(start, int) and mode in (None, "promise_in_bounds"):
        return jax.lax.slice_in_dim(array, start, start + n, axis=i)
    if mode in ("clip", "promise_in_bounds"):
        return jax.lax.dynamic_slice_in_dim(array, start, n, axis=i)
    # fill: read the in-range block nearest to start, move its entries to their places, fill the rest
    s = jnp.asarray(start).astype(jnp.int32)
    s = jnp.where(s < 0, s + size, s)
    c = jnp.clip(s, 0, size - n)
    block = jax.lax.dynamic_slice_in_dim(array, c, n, axis=i)
    if n == 0:
        return block
    block = jnp.roll(block, c - s, axis=i)
    pos = s + jnp.arange(n, dtype=jnp.int32)
    ok = ((pos >= 0) & (pos < size)).reshape((n,) + (1,) * (array.ndim - i - 1))
    fill = _default_fill(array.dtype) if fill_value is None else fill_value
    return jnp.where(ok, block, jnp.asarray(fill, block.dtype))


def index(x: NamedArray, idx: Any, *, mode: Optional[str] = None, fill_value: Any = None) -> NamedArray:
    """``x[idx]`` by name: ``(axis, index)`` pairs or a dict (see the module docstring).

    ``mode`` (``None``, ``"fill"``, ``"clip"``, ``"promise_in_bounds"``) says what an
    out-of-range index does; by default a concrete one raises an ``IndexError`` and a traced
    one reads ``fill_value`` (default: NaN for floats; see the module docstring).

    >>> import jax, jax.numpy as jnp, namax as nx
    >>> B, P = nx.make_axes(batch=2, position=5)
    >>> x = nx.zeros((B, P))
    >>> x["position", 3].axes, x["batch", 1, "position", 1:4].axes
    ((Axis('batch', 2),), (Axis('position', 3),))
    >>> x["batch", 7]
    Traceback (most recent call last):
    ...
    IndexError: Index 7 is out of range for axis 'batch' of size 2
    >>> jax.jit(lambda x, i: x["batch", i])(x, 7).array.tolist()  # traced: NaN, never a real row
    [nan, nan, nan, nan, nan]
    >>> nx.index(x, {"batch": 7}, mode="clip").array.tolist()
    [0.0, 0.0, 0.0, 0.0, 0.0]
    """
    _check_mode(mode, _READ_MODES, "index")
    unchecked = mode in ("fill", "clip")  # an explicit rule for out-of-range indices: no error
    basic: list[Any] = [builtins.slice(None)] * x.ndim
    dynamic: dict[str, tuple[Any, int]] = {}
    advanced: dict[str, NamedArray] = {}
    for name, v in _pairs(x, idx):
        i = x.axis_index(name)
        size = x.axes[i].size
        if isinstance(v, (bool, np.bool_)):
            raise TypeError(f"Index for axis {name!r} is a bool; boolean masks are not supported, use namax.where")
        if isinstance(v, numbers.Integral):
            v = int(v)
            if -size <= v < size:
                basic[i] = v % size
            elif mode == "clip" and size:
                basic[i] = 0 if v < 0 else size - 1
            elif unchecked:
                advanced[name] = NamedArray(jnp.asarray(size, jnp.int32), ())  # out of range: the fill value
            else:
                raise IndexError(f"Index {v} is out of range for axis {name!r} of size {size}")
        elif isinstance(v, builtins.slice):
            _static_slice_len(v, size, name)
            basic[i] = v
        elif isinstance(v, dslice):
            if v.size > size:
                raise IndexError(f"dslice of size {v.size} is larger than axis {name!r} of size {size}")
            start = _check_start(v.start, name)
            if isinstance(start, int) and not unchecked:
                start = _static_start(start, v.size, size, name, f"dslice({start}, {v.size})")
            dynamic[name] = (start, v.size)
        elif isinstance(v, NamedArray):
            if not jnp.issubdtype(v.dtype, jnp.integer):
                raise TypeError(f"Index array for axis {name!r} must have an integer dtype, got {v.dtype}")
            if not unchecked:
                _check_index_values(v, name, size)
            advanced[name] = v
        elif _is_int_scalar_array(v):
            v = NamedArray(jnp.asarray(v), ())
            if not unchecked:
                _check_index_values(v, name, size)
            advanced[name] = v
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
    for name, (start, n) in dynamic.items():
        i = [a.name for a in axes].index(name)
        array = _read_block(array, i, start, n, mode, fill_value)
        axes = axes[:i] + (axes[i].resize(n),) + axes[i + 1 :]
    if advanced:
        array, axes = _advanced(array, axes, advanced, mode, fill_value)
    return wrap(array, axes)


_index = index  # ``take``'s parameter is called ``index``, as in Haliax


def _advanced(array: jax.Array, axes: tuple[Axis, ...], indices: dict[str, NamedArray], mode: Any = None,
              fill_value: Any = None):
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
    out = array.at[(builtins.slice(None),) * cut + raw].get(mode="fill" if mode is None else mode,
                                                           fill_value=fill_value)
    kept = [axes[i] for i in rest]
    return out, tuple(kept[:cut]) + tuple(index_axes) + tuple(kept[cut:])


def take(x: NamedArray, axis: AxisSelector, index: Any, *, mode: Optional[str] = None,
         fill_value: Any = None) -> NamedArray:
    """``x`` indexed along one axis: an int, an integer scalar array, or a NamedArray of ints.

    ``mode`` and ``fill_value`` are :func:`index`'s: a concrete out-of-range index raises an
    ``IndexError``; under ``jit`` an out-of-range one reads ``fill_value`` (default NaN for
    floats) unless ``mode`` says otherwise.

    >>> import jax.numpy as jnp, namax as nx
    >>> Vocab, Embed, Pos = nx.make_axes(vocab=10, embed=4, position=3)
    >>> ids = nx.named(jnp.array([1, 5, 2]), Pos)
    >>> nx.take(nx.zeros((Vocab, Embed)), "vocab", ids).axes
    (Axis('position', 3), Axis('embed', 4))
    >>> nx.take(nx.arange(Vocab), "vocab", nx.named(jnp.array([1, 12, 2]), Pos), mode="fill", fill_value=-1).array.tolist()
    [1, -1, 2]
    """
    return _index(x, {axis_name(axis): index}, mode=mode, fill_value=fill_value)


def _check_start(start: Any, name: str) -> Any:
    """A start as a Python int when concrete (so it can be checked), else the traced scalar."""
    if isinstance(start, (bool, np.bool_)):
        raise TypeError(f"Start for axis {name!r} must be an integer, got {start!r}")
    if isinstance(start, numbers.Integral):
        return int(start)
    if _is_int_scalar_array(start):
        return start if _is_traced(start) else int(start)
    raise TypeError(f"Start for axis {name!r} must be an int or an integer scalar array, got {start!r}")


def slice(
    x: NamedArray,
    axis: Optional[AxisSelector] = None,
    new_axis: Optional[AxisSelector] = None,
    start: Any = 0,
    length: Any = None,
    *,
    mode: Optional[str] = None,
    fill_value: Any = None,
) -> NamedArray:
    """A contiguous block of ``x``, by name, in either of Haliax's two forms.

    One axis: ``slice(x, "position", start=i, length=4)`` (``new_axis`` optionally renames the
    sliced axis; an Axis there also gives the length). Several axes: ``slice(x, start={"position":
    i, "head": 0}, length={"position": 4, "head": 2})``. Starts may be traced; lengths are
    static and default to "to the end" when the start is static. A negative start counts from
    the end. ``mode`` and ``fill_value`` are :func:`index`'s: a concrete block that does not
    fit raises an ``IndexError``; under ``jit`` its positions past the end read ``fill_value``
    (``mode="clip"``: the block is moved back in range, as ``lax.dynamic_slice`` does).

    >>> import namax as nx
    >>> x = nx.arange(nx.Axis("position", 6))
    >>> nx.slice(x, "position", start=2, length=3).array.tolist()
    [2, 3, 4]
    >>> nx.slice(x, "position", start=-2).array.tolist()
    [4, 5]
    >>> nx.slice(x, "position", start=5, length=2, mode="clip").array.tolist()
    [4, 5]
    """
    _check_mode(mode, _READ_MODES, "slice")
    unchecked = mode in ("fill", "clip")
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
            t = s + size if s < 0 else s
            if not 0 <= t <= size:
                raise IndexError(f"slice: start {s} is out of range for axis {name!r} of size {size}")
            s, n = t, size - t
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral) or n < 0:
            raise TypeError(f"slice: length for axis {name!r} must be a static int >= 0, got {n!r}")
        n = int(n)
        if n > size:
            raise IndexError(f"slice: length {n} is larger than axis {name!r} of size {size}")
        if isinstance(s, int) and not unchecked:
            s = _static_start(s, n, size, name, f"slice: start {s} with length {n}")
        array = _read_block(array, i, s, n, mode, fill_value)
        new = renames.get(name, name)
        if isinstance(new, Axis) and new.size != n:
            raise ValueError(f"slice: new axis {new} does not have the slice length {n}")
        axes[i] = Axis(axis_name(new), n)
    return wrap(array, axes)


def updated_slice(x: NamedArray, start: Mapping[AxisSelector, Any], update: NamedArray, *,
                  mode: Optional[str] = None) -> NamedArray:
    """``x`` with the block at ``start`` replaced by ``update`` (``lax.dynamic_update_slice`` by name).

    ``update``'s axes are a subset of ``x``'s (by name), no larger; an axis of ``x`` that
    ``update`` lacks is written at one position (its start). Unlisted starts are 0; a
    negative start counts from the end. ``mode`` (``None``, ``"drop"``, ``"clip"``,
    ``"promise_in_bounds"``): by default a concrete start whose block does not fit raises an
    ``IndexError`` and, under ``jit``, the part of the update outside ``x`` is dropped (the
    rest is written at its place); ``"clip"`` moves the block back in range, as
    ``lax.dynamic_update_slice`` does.

    >>> import namax as nx
    >>> L, P = nx.make_axes(layer=2, position=4)
    >>> cache = nx.zeros((L, P))
    >>> nx.updated_slice(cache, {"layer": 1, "position": 2}, nx.ones(P.resize(2))).array.tolist()
    [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]
    >>> nx.updated_slice(cache, {"layer": 1, "position": 3}, nx.ones(P.resize(2)), mode="drop").array.tolist()
    [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    """
    _check_mode(mode, _WRITE_MODES, "updated_slice")
    unchecked = mode in ("drop", "clip")
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
        if isinstance(s, int) and not unchecked:
            n = update.axis_size(name) if update.has_axis(name) else 1
            s = _static_start(s, n, x.axes[i].size, name, f"updated_slice: start {s} with update size {n}")
        starts[i] = s
    raw = align(update, [Axis(a.name, update.axis_size(a.name) if update.has_axis(a.name) else 1) for a in x.axes])
    raw = raw.astype(x.dtype)
    checked = all(isinstance(s, int) for s in starts) and not unchecked
    if mode in ("clip", "promise_in_bounds") or checked:
        return wrap(jax.lax.dynamic_update_slice(x.array, raw, starts), x.axes)
    # drop: write the in-range block nearest to start, with the update's entries moved to their
    # places and the old values kept where the update falls outside the array
    corner: list[Any] = []
    keep = None
    for i, s in enumerate(starts):
        size, n = x.array.shape[i], raw.shape[i]
        if isinstance(s, int) and mode is None:  # checked above
            corner.append(s)
            continue
        s = jnp.asarray(s).astype(jnp.int32)
        s = jnp.where(s < 0, s + size, s)
        c = jnp.clip(s, 0, size - n)
        if n:
            raw = jnp.roll(raw, s - c, axis=i)
        j = jnp.arange(n, dtype=jnp.int32) - (s - c)
        ok = ((j >= 0) & (j < n)).reshape((n,) + (1,) * (x.ndim - i - 1))
        keep = ok if keep is None else keep & ok
        corner.append(c)
    old = jax.lax.dynamic_slice(x.array, corner, raw.shape)
    new = raw if keep is None else jnp.where(keep, raw, old)
    return wrap(jax.lax.dynamic_update_slice(x.array, new, corner), x.axes)


__all__ = ["index", "take", "slice", "updated_slice", "dslice", "ds"]
