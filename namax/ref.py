"""Mutable named arrays: :class:`NamedRef` is a ``jax.Ref`` plus its axes.

Read and write by name, as NamedArrays are indexed: ``ref["position", 3]``,
``ref[{"head": 0}] = value``, ``ref["position", nx.ds(i, 4)]`` (``i`` may be traced).

>>> import namax as nx
>>> Pos, Embed = nx.make_axes(position=3, embed=2)
>>> cache = new_ref(nx.zeros((Pos, Embed)))
>>> cache["position", 1] = nx.ones(Embed)
>>> freeze(cache)["embed", 0].array.tolist()
[0.0, 1.0, 0.0]
"""

from __future__ import annotations

import numbers
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from .axis import Axis, AxisSelector, axis_name
from .named import NamedArray, _axes_str, is_scalarish, wrap
from .ops.indexing import dslice
from .ops.shape import broadcast_to


@jax.tree_util.register_pytree_node_class
class NamedRef:
    """A ``jax.Ref`` with one :class:`Axis` per dimension (a pytree: the ref is the leaf).

    >>> import namax as nx
    >>> ref = new_ref(nx.arange(nx.Axis("position", 4)))
    >>> ref.axes, ref.shape, ref.ndim
    ((Axis('position', 4),), {'position': 4}, 1)
    """

    __slots__ = ("_ref", "axes")

    def __init__(self, ref: Any, axes: tuple[Axis, ...]):
        if not isinstance(ref, jax.Ref):
            raise TypeError(f"NamedRef wraps a jax.Ref (see namax.new_ref), got {type(ref).__name__}")
        axes = tuple(axes)
        if tuple(ref.shape) != tuple(a.size for a in axes):
            raise ValueError(f"NamedRef: ref of shape {tuple(ref.shape)} given axes {_axes_str(axes)}")
        object.__setattr__(self, "_ref", ref)
        object.__setattr__(self, "axes", axes)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("NamedRef's ref and axes are fixed; write its contents with ref[...] = value")

    def tree_flatten(self):
        return (self._ref,), self.axes

    @classmethod
    def tree_unflatten(cls, axes, children):
        obj = object.__new__(cls)
        object.__setattr__(obj, "_ref", children[0])
        object.__setattr__(obj, "axes", axes)
        return obj

    @property
    def dtype(self):
        return self._ref.dtype

    @property
    def shape(self) -> dict[str, int]:
        return {a.name: a.size for a in self.axes}

    named_shape = shape

    @property
    def ndim(self) -> int:
        return len(self.axes)

    def resolve_axis(self, axis: AxisSelector) -> Axis:
        """The Axis of this ref named ``axis``.

        >>> import namax as nx
        >>> new_ref(nx.zeros(nx.Axis("embed", 2))).resolve_axis("embed")
        Axis('embed', 2)
        """
        name = axis_name(axis)
        for a in self.axes:
            if a.name == name:
                if isinstance(axis, Axis) and axis.size != a.size:
                    raise ValueError(f"NamedRef: axis {name!r} has size {a.size}, not {axis.size}")
                return a
        raise ValueError(f"NamedRef: no axis {name!r} in {_axes_str(self.axes)}")

    def value(self) -> NamedArray:
        """The current contents, as a NamedArray."""
        return get(self)

    def __getitem__(self, idx: Any) -> NamedArray:
        return get(self, idx)

    def __setitem__(self, idx: Any, value: Any) -> None:
        swap(self, idx, value)

    def __repr__(self) -> str:
        return f"NamedRef({_axes_str(self.axes)}, dtype={self.dtype})"


def _selection(ref: NamedRef, idx: Any) -> dict[str, Any]:
    """An index expression (``...``, ``{axis: index}`` or ``(axis, index, ...)``) as ``{name: index}``."""
    if idx is Ellipsis or idx is None:
        return {}
    if isinstance(idx, Mapping):
        pairs = list(idx.items())
    elif isinstance(idx, tuple) and len(idx) % 2 == 0:
        pairs = list(zip(idx[::2], idx[1::2]))
    else:
        raise TypeError(f"NamedRef: index by name, e.g. ref['position', 3] or ref[{{'position': 3}}], got {idx!r}")
    out: dict[str, Any] = {}
    for axis, index in pairs:
        name = ref.resolve_axis(axis).name
        if name in out:
            raise ValueError(f"NamedRef: axis {name!r} is indexed twice in {idx!r}")
        out[name] = index
    return out


def _indexer(ref: NamedRef, idx: Any) -> tuple[tuple, tuple[Axis, ...]]:
    """The raw indexer for ``ref._ref`` and the axes of what it selects."""
    selection = _selection(ref, idx)
    basic: list[Any] = []   # static ints and slices
    gathers: list[Any] = []  # per axis: a 0-d index (axis dropped) or a 1-d index array (axis kept)
    axes: list[Axis] = []
    dynamic = False
    for ax in ref.axes:
        v = selection.get(ax.name, slice(None))
        if isinstance(v, bool) or isinstance(v, NamedArray):
            raise TypeError(f"NamedRef: axis {ax.name!r} index must be an int, a slice, a dslice or an integer "
                            f"scalar, got {type(v).__name__}")
        if isinstance(v, numbers.Integral):
            if not -ax.size <= v < ax.size:
                raise IndexError(f"NamedRef: index {v} is out of range for axis {ax.name!r} of size {ax.size}")
            v = int(v) % ax.size
            basic.append(v)
            gathers.append(jnp.asarray(v))
        elif isinstance(v, slice):
            start, stop, step = v.indices(ax.size)
            positions = range(start, stop, step)
            basic.append(v)
            gathers.append(jnp.asarray(positions, dtype=jnp.int32))
            axes.append(ax.resize(len(positions)))
        elif isinstance(v, dslice):
            if v.size > ax.size:
                raise IndexError(f"NamedRef: dslice of size {v.size} is larger than axis {ax.name!r} of size {ax.size}")
            start = jnp.clip(jnp.asarray(v.start), 0, ax.size - v.size)  # as lax.dynamic_slice: clamped
            gathers.append(start + jnp.arange(v.size))
            axes.append(ax.resize(v.size))
            dynamic = True
        elif getattr(v, "ndim", None) == 0 and jnp.issubdtype(v.dtype, jnp.integer):
            gathers.append(jnp.where(v < 0, v + ax.size, v))
            dynamic = True
        else:
            raise TypeError(f"NamedRef: axis {ax.name!r} index must be an int, a slice, a dslice or an integer "
                            f"scalar, got {v!r}")
    if not dynamic:
        return tuple(basic), tuple(axes)
    # every index an integer array, shaped to cross (not zip) the kept axes: an outer-product gather
    kept = [i for i, g in enumerate(gathers) if g.ndim == 1]
    raw = []
    for i, g in enumerate(gathers):
        if g.ndim == 1:
            shape = [1] * len(kept)
            shape[kept.index(i)] = g.shape[0]
            g = g.reshape(shape)
        raw.append(g)
    return tuple(raw), tuple(axes)


def new_ref(value: NamedArray) -> NamedRef:
    """A new mutable :class:`NamedRef` holding ``value`` (``jax.new_ref`` of its array).

    >>> import namax as nx
    >>> new_ref(nx.zeros(nx.Axis("embed", 2)))
    NamedRef((embed:2), dtype=float32)
    """
    if not isinstance(value, NamedArray):
        raise TypeError(f"new_ref takes a NamedArray, got {type(value).__name__}")
    return NamedRef(jax.new_ref(value.array), value.axes)


def get(ref: NamedRef, idx: Any = Ellipsis) -> NamedArray:
    """Read ``ref[idx]`` (all of it by default) as a NamedArray.

    >>> import namax as nx
    >>> ref = new_ref(nx.arange(nx.Axis("position", 4)))
    >>> get(ref, {"position": slice(1, 3)}).array.tolist()
    [1, 2]
    """
    _check_ref(ref, "get")
    raw, axes = _indexer(ref, idx)
    return wrap(ref._ref[raw], axes)


def swap(ref: NamedRef, idx: Any, value: Any) -> NamedArray:
    """Write ``value`` at ``ref[idx]`` and return what was there.

    ``value`` is a scalar or a NamedArray whose axes are among the selected ones (any
    order; missing ones broadcast by name).

    >>> import namax as nx
    >>> ref = new_ref(nx.arange(nx.Axis("position", 3)))
    >>> swap(ref, ("position", 0), 7).item(), freeze(ref).array.tolist()
    (0, [7, 1, 2])
    """
    _check_ref(ref, "swap")
    raw, axes = _indexer(ref, idx)
    if not jnp.can_cast(jnp.result_type(value), ref.dtype, casting="same_kind"):
        raise TypeError(f"swap: cannot write a value of dtype {jnp.result_type(value)} into {ref!r} "
                        "without changing its kind (cast it first)")
    if isinstance(value, NamedArray):
        extra = [a.name for a in value.axes if a.name not in {ax.name for ax in axes}]
        if extra:
            raise ValueError(f"swap: value axes {_axes_str(value.axes)} include {extra}, which the selection "
                             f"{_axes_str(axes)} of {ref!r} does not have")
        payload = broadcast_to(value, axes).array
    elif is_scalarish(value):
        payload = jnp.broadcast_to(jnp.asarray(value, dtype=ref.dtype), tuple(a.size for a in axes))
    else:
        raise TypeError(f"swap: the value must be a NamedArray or a scalar, got an unnamed "
                        f"{type(value).__name__} of shape {getattr(value, 'shape', None)}")
    return wrap(jax.ref.swap(ref._ref, raw, payload.astype(ref.dtype)), axes)


def freeze(ref: NamedRef) -> NamedArray:
    """The current contents of ``ref`` as a NamedArray (the ref stays usable, as in Haliax).

    >>> import namax as nx
    >>> freeze(new_ref(nx.ones(nx.Axis("embed", 2)))).array.tolist()
    [1.0, 1.0]
    """
    return get(ref)


def _check_ref(ref: Any, what: str) -> None:
    if not isinstance(ref, NamedRef):
        raise TypeError(f"{what}: expected a NamedRef (see namax.new_ref), got {type(ref).__name__}")


__all__ = ["NamedRef", "new_ref", "get", "swap", "freeze"]
