"""Whole-array helpers by name: ravel/flatten, ndim, pad_left, repeat, tile, packbits,
unpackbits, geomspace, the ``x.at[...]`` functional updates and ``matches_axes``."""

from __future__ import annotations

import builtins
import numbers
from typing import Any, Callable, Mapping, Optional

import jax.numpy as jnp
import numpy as np

from ..axis import Axis, AxisSelector, axis_name, merge_axes
from ..named import NamedArray, _axes_str, align, is_scalarish, wrap
from . import shape as _shape
from .indexing import (
    _check_index_values, _check_start, _is_int_scalar_array, _pairs, _static_slice_len, _static_start, dslice,
)


def ravel(array: NamedArray, new_axis_name: AxisSelector) -> NamedArray:
    """All axes merged, row-major in ``array``'s order, into one axis ``new_axis_name``.

    ``flatten`` is the same function. A 0-d array becomes one element.

    >>> import namax as nx
    >>> x = nx.arange(nx.Axis("x", 6)).unflatten_axis("x", nx.make_axes(a=2, b=3))
    >>> nx.ravel(x, "flat").axes
    (Axis('flat', 6),)
    """
    if not isinstance(array, NamedArray):
        raise TypeError(f"ravel: expected a NamedArray, got {type(array).__name__}")
    if array.ndim == 0:
        new = Axis(axis_name(new_axis_name), 1)
        if isinstance(new_axis_name, Axis) and new_axis_name.size != 1:
            raise ValueError(
                f"ravel: a 0-d array has 1 element but the new axis {new_axis_name} has size {new_axis_name.size}"
            )
        return wrap(jnp.reshape(array.array, (1,)), (new,))
    return _shape.flatten_axes(array, array.axes, new_axis_name)


flatten = ravel


def ndim(a: Any) -> int:
    """The number of axes of a NamedArray (or dimensions of a plain array).

    >>> import namax as nx
    >>> nx.ndim(nx.zeros(nx.make_axes(a=2, b=3)))
    2
    """
    return a.ndim if isinstance(a, NamedArray) else int(jnp.ndim(a))


def pad_left(array: NamedArray, axis: AxisSelector, new_axis: Axis, value: Any = 0) -> NamedArray:
    """``axis`` padded at its start with ``value`` up to ``new_axis.size``, and renamed ``new_axis``.

    >>> import namax as nx
    >>> x = nx.arange(nx.Axis("position", 3), start=1)
    >>> nx.pad_left(x, "position", nx.Axis("padded", 5)).array.tolist()
    [0, 0, 1, 2, 3]
    """
    if not isinstance(new_axis, Axis):
        raise TypeError(f"pad_left: new_axis must be an Axis (its size is the padded length), got {new_axis!r}")
    old = array.resolve_axis(axis)
    if new_axis.size < old.size:
        raise ValueError(
            f"pad_left: cannot pad axis {old.name!r} of size {old.size} to the smaller {new_axis}"
        )
    padded = _shape.pad(array, {old.name: (new_axis.size - old.size, 0)}, constant_values=value)
    return _shape.rename(padded, {old.name: new_axis.name})


def _along(array: NamedArray, axis: AxisSelector, what: str, fn: Callable[[Any, int], Any]) -> NamedArray:
    """``fn(raw, dim)`` changes the length of ``axis`` only; the axis keeps its name and place."""
    if not isinstance(array, NamedArray):
        raise TypeError(f"{what}: expected a NamedArray, got {type(array).__name__}")
    i = array.axis_index(axis)
    out = fn(array.array, i)
    return wrap(out, array.axes[:i] + (array.axes[i].resize(out.shape[i]),) + array.axes[i + 1 :])


def repeat(
    a: NamedArray, repeats: Any, axis: AxisSelector, total_repeat_length: Optional[int] = None
) -> NamedArray:
    """Each entry along ``axis`` repeated ``repeats`` times (an int, or one count per entry:
    a NamedArray with that axis); the axis keeps its name with the new length.

    Traced per-entry counts need ``total_repeat_length`` (the static result length).

    >>> import namax as nx
    >>> nx.repeat(nx.arange(nx.Axis("x", 3)), 2, "x").array.tolist()
    [0, 0, 1, 1, 2, 2]
    """
    if isinstance(repeats, NamedArray):
        name = axis_name(axis)
        if repeats.axis_names != (name,):
            raise ValueError(
                f"repeat: per-entry repeats must have exactly the axis {name!r}, got {_axes_str(repeats.axes)}"
            )
        repeats = repeats.array
    elif not isinstance(repeats, numbers.Integral) and np.ndim(repeats) != 0:
        raise TypeError(
            f"repeat: repeats must be an int or a NamedArray along {axis_name(axis)!r}, "
            f"got an unnamed array of shape {np.shape(repeats)}"
        )
    if isinstance(repeats, numbers.Integral) and repeats < 0:
        raise ValueError(f"repeat: repeats must be >= 0, got {repeats}")
    return _along(
        a, axis, "repeat", lambda raw, i: jnp.repeat(raw, repeats, axis=i, total_repeat_length=total_repeat_length)
    )


def tile(a: NamedArray, reps: Mapping[AxisSelector, int]) -> NamedArray:
    """Repeat the whole array along axes: ``tile(x, {"position": 2, "layer": 3})``.

    An axis of ``a`` grows ``reps`` times; a new axis (a name not in ``a``) is added in front
    with size ``reps``.

    >>> import namax as nx
    >>> t = nx.tile(nx.arange(nx.Axis("x", 2)), {"x": 2, "copy": 3})
    >>> t.axes, t.array[0].tolist()
    ((Axis('copy', 3), Axis('x', 4)), [0, 1, 0, 1])
    """
    if not isinstance(a, NamedArray):
        raise TypeError(f"tile: expected a NamedArray, got {type(a).__name__}")
    dim_reps = [1] * a.ndim
    new_axes = []
    for key, n in reps.items():
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"tile: reps for axis {axis_name(key)!r} must be an int >= 0, got {n!r}")
        if a.has_axis(axis_name(key)):
            dim_reps[a.axis_index(key)] = int(n)
        else:
            if isinstance(key, Axis) and key.size != n:
                raise ValueError(
                    f"tile: the new axis {key} would have size reps={n}; give its name or Axis({key.name!r}, {n})"
                )
            new_axes.append(Axis(axis_name(key), int(n)))
    out_axes = tuple(new_axes) + tuple(ax.resize(ax.size * r) for ax, r in zip(a.axes, dim_reps))
    return wrap(jnp.tile(a.array, [ax.size for ax in new_axes] + dim_reps), out_axes)


def packbits(a: NamedArray, axis: AxisSelector, *, bitorder: str = "big") -> NamedArray:
    """Pack booleans (or 0/1 integers) along ``axis`` into uint8 bytes; the axis shrinks to
    ``ceil(size / 8)`` (``jnp.packbits``).

    >>> import jax.numpy as jnp, namax as nx
    >>> bits = nx.named(jnp.array([1, 0, 0, 0, 0, 0, 1, 1], dtype=jnp.uint8), "bit")
    >>> nx.packbits(bits, "bit").array.tolist()
    [131]
    """
    return _along(a, axis, "packbits", lambda raw, i: jnp.packbits(raw, axis=i, bitorder=bitorder))


def unpackbits(a: NamedArray, axis: AxisSelector, *, count: Optional[int] = None, bitorder: str = "big") -> NamedArray:
    """Unpack uint8 bytes along ``axis`` into bits; the axis grows to ``8 * size`` (or ``count``).

    >>> import jax.numpy as jnp, namax as nx
    >>> nx.unpackbits(nx.named(jnp.array([131], dtype=jnp.uint8), "byte"), "byte").array.tolist()
    [1, 0, 0, 0, 0, 0, 1, 1]
    """
    return _along(a, axis, "unpackbits", lambda raw, i: jnp.unpackbits(raw, axis=i, count=count, bitorder=bitorder))


def geomspace(
    axis: AxisSelector, *, start: Any, stop: Any, endpoint: bool = True, dtype: Any = None
) -> NamedArray:
    """A geometric progression from ``start`` to ``stop`` along ``axis`` (``jnp.geomspace``);
    a bare name means 50 values, as in Haliax and NumPy.

    >>> import namax as nx
    >>> nx.geomspace(nx.Axis("x", 3), start=1.0, stop=100.0).array.tolist()
    [1.0, 10.0, 100.0]
    """
    axis = axis if isinstance(axis, Axis) else Axis(axis_name(axis), 50)
    for what, v in (("start", start), ("stop", stop)):
        if isinstance(v, numbers.Number) and v == 0:
            raise ValueError(f"geomspace: {what} is 0; a geometric sequence cannot include zero")
    return wrap(jnp.geomspace(start, stop, axis.size, endpoint=endpoint, dtype=dtype), (axis,))


# --- x.at[...]: functional updates by name ---------------------------------------------


def _at_plan(x: NamedArray, idx: Any):
    """How to write ``x.at[idx]`` as a jnp ``.at``: (permutation of x's dims, raw index, the
    indexed region's axes). Same semantics as ``x[idx]``; advanced (array) indices are moved
    first, so the region's axes are the index axes followed by the remaining kept axes."""
    basic: dict[str, Any] = {}
    advanced: dict[str, NamedArray] = {}
    for name, v in _pairs(x, idx):
        ax = x.axes[x.axis_index(name)]
        if isinstance(v, (bool, np.bool_)):
            raise TypeError(f"at: index for axis {name!r} is a bool; boolean masks are not supported, use namax.where")
        if isinstance(v, numbers.Integral):
            if not -ax.size <= v < ax.size:
                raise IndexError(f"at: index {v} is out of range for axis {name!r} of size {ax.size}")
            basic[name] = int(v) % ax.size
        elif isinstance(v, builtins.slice):
            _static_slice_len(v, ax.size, name)
            basic[name] = v
        elif isinstance(v, dslice):
            if v.size > ax.size:
                raise IndexError(f"at: dslice of size {v.size} is larger than axis {name!r} of size {ax.size}")
            start = _check_start(v.start, name)
            if isinstance(start, int):  # concrete: must fit (negative: from the end)
                start = _static_start(start, v.size, ax.size, name, f"at: dslice({start}, {v.size})")
            # traced: never clamped; positions past the end are dropped (updates) or filled (get), as in jnp
            advanced[name] = wrap(start + jnp.arange(v.size), (ax.resize(v.size),))
        elif isinstance(v, NamedArray):
            if not jnp.issubdtype(v.dtype, jnp.integer):
                raise TypeError(f"at: index array for axis {name!r} must have an integer dtype, got {v.dtype}")
            _check_index_values(v, name, ax.size)
            advanced[name] = v
        elif _is_int_scalar_array(v):
            v = NamedArray(jnp.asarray(v), ())
            _check_index_values(v, name, ax.size)
            advanced[name] = v
        else:
            raise TypeError(
                f"at: unsupported index {v!r} for axis {name!r}; use an int, a slice, nx.ds(start, size), "
                "an integer scalar or a NamedArray of integers"
            )
    # an index-array axis that x has (and that is not indexed itself) is matched, not crossed
    index_names = {a.name for v in advanced.values() for a in v.axes}
    for ax in x.axes:
        if ax.name in index_names and ax.name not in advanced and not isinstance(basic.get(ax.name), int):
            positions = jnp.arange(ax.size)[basic.pop(ax.name, builtins.slice(None))]
            advanced[ax.name] = wrap(positions, (ax.resize(positions.shape[0]),))
    index_axes = merge_axes(*(v.axes for v in advanced.values()), what="index arrays")  # () if none
    first = [i for i, ax in enumerate(x.axes) if ax.name in advanced]
    rest = [i for i, ax in enumerate(x.axes) if ax.name not in advanced]
    raw = tuple(align(advanced[x.axes[i].name], index_axes) for i in first)
    raw += tuple(basic.get(x.axes[i].name, builtins.slice(None)) for i in rest)
    region = index_axes + tuple(
        _sliced(x.axes[i], basic.get(x.axes[i].name)) for i in rest if not isinstance(basic.get(x.axes[i].name), int)
    )
    return first + rest, raw, region


def _sliced(ax: Axis, index: Any) -> Axis:
    """``ax`` after a static slice (or unchanged for no index)."""
    if index is None:
        return ax
    return ax.resize(_static_slice_len(index, ax.size, ax.name))


def _update_method(method: str) -> Callable:
    def update(self, values: Any, **kwargs) -> NamedArray:
        return self._apply(method, values, **kwargs)

    update.__name__ = update.__qualname__ = method
    update.__doc__ = f"``x.at[idx].{method}(values)`` by name; ``values`` broadcast to the indexed region by name."
    return update


class _IndexedRegion:
    """``x.at[idx]``: the region of ``x`` that ``x[idx]`` reads, to read or update functionally."""

    def __init__(self, x: NamedArray, idx: Any):
        self._x = x
        self._perm, self._raw, self.axes = _at_plan(x, idx)

    def _at(self):
        raw = self._x.array
        if self._perm != list(range(self._x.ndim)):
            raw = jnp.transpose(raw, self._perm)
        return raw.at[self._raw]

    def _restore(self, raw: Any) -> NamedArray:
        if self._perm != list(range(self._x.ndim)):
            raw = jnp.transpose(raw, np.argsort(self._perm))
        return wrap(raw, self._x.axes)

    def _apply(self, method: str, values: Any, **kwargs) -> NamedArray:
        if isinstance(values, NamedArray):
            extra = [a.name for a in values.axes if a.name not in {r.name for r in self.axes}]
            if extra:
                raise ValueError(
                    f"at[...].{method}: the values have axes {extra} that the indexed region "
                    f"{_axes_str(self.axes)} lacks"
                )
            values = align(values, self.axes)
        elif not is_scalarish(values):
            raise TypeError(
                f"at[...].{method}: values must be a NamedArray or a scalar, got an unnamed array of shape "
                f"{np.shape(values)}; name its axes with namax.named"
            )
        return self._restore(getattr(self._at(), method)(values, **kwargs))

    def get(self, **kwargs) -> NamedArray:
        """The indexed region (as ``x[idx]``; ``mode=``/``fill_value=`` as in jnp's ``.at[].get``)."""
        return wrap(self._at().get(**kwargs), self.axes)

    def apply(self, func: Callable, **kwargs) -> NamedArray:
        """``x`` with the unary ``func`` applied to the indexed region."""
        return self._restore(self._at().apply(func, **kwargs))


# the jnp ``.at`` updates that take values
UPDATE_METHODS = ("set", "add", "subtract", "mul", "multiply", "divide", "power", "min", "max")
for _m in UPDATE_METHODS:
    setattr(_IndexedRegion, _m, _update_method(_m))
del _m


class IndexUpdateHelper:
    """What ``x.at`` returns: ``x.at[{"position": 3}].set(v)``, ``x.at["batch", i].add(v)``, ...
    indexing by name exactly as ``x[...]``; ``.get``, ``.apply`` and every jnp ``.at`` update.

    >>> import namax as nx
    >>> x = nx.zeros(nx.make_axes(batch=2, position=3))
    >>> x.at[{"position": 1}].set(nx.arange(nx.Axis("batch", 2)) + 1.0).array.tolist()
    [[0.0, 1.0, 0.0], [0.0, 2.0, 0.0]]
    """

    def __init__(self, x: NamedArray):
        if not isinstance(x, NamedArray):
            raise TypeError(f"at: expected a NamedArray, got {type(x).__name__}")
        self._x = x

    def __getitem__(self, idx: Any) -> _IndexedRegion:
        return _IndexedRegion(self._x, idx)


def at(x: NamedArray) -> IndexUpdateHelper:
    """``x.at`` as a function: ``nx.at(x)[{"position": 3}].add(1.0)``.

    >>> import namax as nx
    >>> from namax.ops.arrays import at
    >>> at(nx.zeros(nx.Axis("x", 3)))["x", 0].add(2.0).array.tolist()
    [2.0, 0.0, 0.0]
    """
    return IndexUpdateHelper(x)


# --- matches_axes --------------------------------------------------------------------


def _parse_axes_spec(spec: Any) -> tuple[tuple[str, ...], tuple[str, ...], bool, bool]:
    """(names before ``...``, names after it, ordered, has ``...``) of a Haliax axes spec."""
    if isinstance(spec, str):
        parts: list[Any] = [Ellipsis if p == "..." else p for p in spec.split()]
        ordered = True
    elif isinstance(spec, (set, frozenset)):
        parts, ordered = list(spec), False
    elif isinstance(spec, (tuple, list)):
        parts, ordered = list(spec), True
    else:
        raise TypeError(
            f"matches_axes: spec must be a string like 'batch ... embed', a tuple/list of names "
            f"(with at most one ...) or a set of names, got {spec!r}"
        )
    if parts.count(Ellipsis) > 1:
        raise TypeError(f"matches_axes: at most one ... allowed in {spec!r}")
    names = [axis_name(p) for p in parts if p is not Ellipsis]
    if Ellipsis in parts:
        cut = parts.index(Ellipsis)
        return tuple(names[:cut]), tuple(names[cut:]), ordered, True
    return tuple(names), (), ordered, False


def matches_axes(x: NamedArray, spec: Any) -> bool:
    """Whether ``x``'s axis names fit ``spec``: ``"batch embed"`` (exactly, in order),
    ``"batch ..."`` (starting with batch), ``("batch", ..., "embed")``, or a set (any order;
    with ``...``: at least these).

    >>> import namax as nx
    >>> x = nx.zeros(nx.make_axes(batch=2, position=3, embed=4))
    >>> x.matches_axes("batch ... embed"), x.matches_axes({"embed", "batch"}), x.matches_axes({"embed", ...})
    (True, False, True)
    """
    before, after, ordered, subset = _parse_axes_spec(spec)
    names = x.axis_names
    if not ordered:
        return set(before) <= set(names) if subset else set(before) == set(names)
    if not subset:
        return names == before
    return (
        len(names) >= len(before) + len(after)
        and names[: len(before)] == before
        and names[len(names) - len(after):] == after
    )


__all__ = ["ravel", "flatten", "ndim", "pad_left", "repeat", "tile", "packbits", "unpackbits", "geomspace"]
