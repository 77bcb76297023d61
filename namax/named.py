"""NamedArray: a JAX array whose dimensions are named :class:`~namax.axis.Axis` objects."""

from __future__ import annotations

import numbers
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .axis import Axis, AxisSelection, AxisSelector, axis_name, check_unique, ensure_tuple, merge_axes
from .tag import tag


class NamedArray:
    """An array plus one :class:`Axis` per dimension. A pytree: the array is the leaf,
    the axes are static.

    >>> import jax.numpy as jnp
    >>> x = NamedArray(jnp.zeros((2, 3)), (Axis("batch", 2), Axis("embed", 3)))
    >>> x.shape
    {'batch': 2, 'embed': 3}
    """

    __slots__ = ("array", "axes")
    __array_priority__ = 1000  # numpy defers binary ops to us

    def __init__(self, array: Any, axes: Sequence[Axis]):
        axes = ensure_tuple(axes)
        for ax in axes:
            if not isinstance(ax, Axis):
                raise TypeError(
                    f"NamedArray: axes must be Axis objects (with sizes), got {ax!r}; "
                    "use namax.named(array, names) to take sizes from the array"
                )
        shape = getattr(array, "shape", None)
        if isinstance(shape, tuple):
            if len(shape) != len(axes):
                raise ValueError(
                    f"NamedArray: array of shape {shape} given {len(axes)} axes {_axes_str(axes)}"
                )
            for ax, size in zip(axes, shape):
                if ax.size != size:
                    raise ValueError(
                        f"NamedArray: axis {ax.name!r} has size {ax.size} but the array's dimension is {size} "
                        f"(shape {shape}, axes {_axes_str(axes)})"
                    )
            check_unique(axes)
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "axes", axes)

    def __setattr__(self, name, value):
        raise AttributeError("NamedArray is immutable")

    # --- pytree -----------------------------------------------------------------------
    # Registered below with module-level functions (no bound-method or methodcaller hop, no
    # __init__): these run for every NamedArray on every jit/grad/tree_map call, so the axes
    # (validated once, where the NamedArray was made) are passed through as the treedef's
    # static data without being checked again.
    def tree_flatten_with_keys(self):
        return _flatten_with_keys(self)

    def tree_flatten(self):
        return _flatten(self)

    @classmethod
    def tree_unflatten(cls, axes, children):
        return _rebuild(cls, axes, children)

    # --- shape information ------------------------------------------------------------
    @property
    def shape(self) -> dict[str, int]:
        """Axis name -> size, in order."""
        return {ax.name: ax.size for ax in self.axes}

    @property
    def axis_names(self) -> tuple[str, ...]:
        """The names of the axes, in order."""
        return tuple(ax.name for ax in self.axes)

    @property
    def dtype(self):
        return self.array.dtype

    @property
    def ndim(self) -> int:
        return len(self.axes)

    @property
    def size(self) -> int:
        """The number of elements; an error naming the axes past XLA's int64 element count.

        >>> named(jnp.zeros((2, 3)), ("batch", "embed")).size
        6
        """
        n = 1
        for ax in self.axes:  # Python ints: a fixed-width product would wrap (2**32 * 2**32 -> 0)
            n *= ax.size
        if n > np.iinfo(np.int64).max:
            raise ValueError(f"NamedArray with axes {_axes_str(self.axes)} has {n} elements, more than the "
                             f"int64 maximum {np.iinfo(np.int64).max} that XLA can index")
        return n

    @property
    def nbytes(self) -> int:
        return self.size * jnp.dtype(self.dtype).itemsize

    def has_axis(self, axis: AxisSelection) -> bool:
        """True if every axis in ``axis`` is present (by name).

        >>> x = named(jnp.zeros((2, 3)), ("batch", "embed"))
        >>> x.has_axis("embed"), x.has_axis(("batch", "mlp"))
        (True, False)
        """
        names = self.axis_names
        return all(axis_name(a) in names for a in ensure_tuple(axis))

    def axis_index(self, axis: AxisSelector) -> int:
        """The position of ``axis``; raises a ValueError naming the axes present.

        >>> x = named(jnp.zeros((2, 3)), ("batch", "embed"))
        >>> x.axis_index("embed")
        1
        >>> x.axis_index("mlp")
        Traceback (most recent call last):
        ...
        ValueError: Axis 'mlp' not found in array with axes (batch:2, embed:3)
        """
        name = axis_name(axis)
        for i, ax in enumerate(self.axes):
            if ax.name == name:
                if isinstance(axis, Axis) and axis.size != ax.size:
                    raise ValueError(
                        f"Axis {name!r} has size {ax.size} in the array but {axis.size} was given "
                        f"(array axes {_axes_str(self.axes)})"
                    )
                return i
        raise ValueError(f"Axis {name!r} not found in array with axes {_axes_str(self.axes)}")

    def resolve_axis(self, axis: AxisSelection):
        """The Axis (or tuple of Axes) with these names, sizes filled in from the array.

        >>> named(jnp.zeros((2, 3)), ("batch", "embed")).resolve_axis(("embed", "batch"))
        (Axis('embed', 3), Axis('batch', 2))
        """
        if isinstance(axis, (Axis, str)):
            return self.axes[self.axis_index(axis)]
        return tuple(self.axes[self.axis_index(a)] for a in axis)

    def axis_size(self, axis: AxisSelector) -> int:
        """The size of one axis, by name or Axis.

        >>> named(jnp.zeros((2, 3)), ("batch", "embed")).axis_size("embed")
        3
        """
        return self.axes[self.axis_index(axis)].size

    def item(self):
        return self.array.item()

    def __len__(self) -> int:
        if not self.axes:
            raise TypeError("len() of a 0-d NamedArray")
        return self.axes[0].size

    def __repr__(self) -> str:
        return f"NamedArray({_axes_str(self.axes)}, dtype={self.dtype},\n{self.array!r})"

    def __bool__(self) -> bool:
        if self.ndim != 0:
            raise ValueError(
                f"The truth value of a NamedArray with axes {_axes_str(self.axes)} is ambiguous; "
                "reduce it with namax.any / namax.all first"
            )
        return bool(self.array)

    def __float__(self) -> float:
        return float(self._scalar("float"))

    def __int__(self) -> int:
        return int(self._scalar("int"))

    def _scalar(self, what):
        if self.ndim != 0:
            raise TypeError(f"{what}() of a NamedArray with axes {_axes_str(self.axes)}: only 0-d arrays convert")
        return self.array

    __hash__ = None  # elementwise __eq__

    # --- methods that delegate to module-level ops -------------------------------------
    def astype(self, dtype) -> "NamedArray":
        return wrap(self.array.astype(dtype), self.axes)

    def rename(self, renames: Mapping[AxisSelector, AxisSelector]) -> "NamedArray":
        from .ops import shape as _shape
        return _shape.rename(self, renames)

    def broadcast_axis(self, axis: Axis | Sequence[Axis]) -> "NamedArray":
        from .ops import shape as _shape
        return _shape.broadcast_axis(self, axis)

    def broadcast_to(self, axes) -> "NamedArray":
        from .ops import shape as _shape
        return _shape.broadcast_to(self, axes)

    def unbind(self, axis: AxisSelector) -> list["NamedArray"]:
        from .ops import shape as _shape
        return _shape.unbind(self, axis)

    def rearrange(self, axes: "str | Sequence[AxisSelector | type(Ellipsis)] | None" = None, /,
                  **bindings) -> "NamedArray":
        """:func:`namax.rearrange`: a sequence of axes, or a string ``"lhs -> rhs"`` with ``**bindings``.

        >>> named(jnp.zeros((2, 3)), ("a", "b")).rearrange("a b -> (ab: a b)").axes
        (Axis('ab', 6),)
        """
        from .ops import shape as _shape
        return _shape.rearrange(self, axes, **bindings)

    transpose = rearrange

    def flatten_axes(self, old_axes: AxisSelection, new_axis: AxisSelector) -> "NamedArray":
        from .ops import shape as _shape
        return _shape.flatten_axes(self, old_axes, new_axis)

    def unflatten_axis(self, axis: AxisSelector, new_axes: Sequence[Axis]) -> "NamedArray":
        from .ops import shape as _shape
        return _shape.unflatten_axis(self, axis, new_axes)

    def split(self, axis: AxisSelector, new_axes: Sequence[Axis]) -> list["NamedArray"]:
        from .ops import shape as _shape
        return _shape.split(self, axis, new_axes)

    def take(self, axis: AxisSelector, index) -> "NamedArray":
        from .ops import indexing as _indexing
        return _indexing.take(self, axis, index)

    def __getitem__(self, idx) -> "NamedArray":
        from .ops import indexing as _indexing
        return _indexing.index(self, idx)

    def dot(self, *others, axis) -> "NamedArray":
        from .ops import dot as _dot
        return _dot.dot(self, *others, axis=axis)

    def sum(self, axis=None, **kw):
        from .ops import reductions as r
        return r.sum(self, axis=axis, **kw)

    def mean(self, axis=None, **kw):
        from .ops import reductions as r
        return r.mean(self, axis=axis, **kw)

    def max(self, axis=None, **kw):
        from .ops import reductions as r
        return r.max(self, axis=axis, **kw)

    def min(self, axis=None, **kw):
        from .ops import reductions as r
        return r.min(self, axis=axis, **kw)

    def prod(self, axis=None, **kw):
        from .ops import reductions as r
        return r.prod(self, axis=axis, **kw)

    def std(self, axis=None, **kw):
        from .ops import reductions as r
        return r.std(self, axis=axis, **kw)

    def var(self, axis=None, **kw):
        from .ops import reductions as r
        return r.var(self, axis=axis, **kw)

    def any(self, axis=None, **kw):
        from .ops import reductions as r
        return r.any(self, axis=axis, **kw)

    def all(self, axis=None, **kw):
        from .ops import reductions as r
        return r.all(self, axis=axis, **kw)

    def argmax(self, axis=None):
        from .ops import reductions as r
        return r.argmax(self, axis)

    def argmin(self, axis=None):
        from .ops import reductions as r
        return r.argmin(self, axis)

    # --- more Haliax methods, each delegating to its module-level op -------------------
    @property
    def at(self):
        """Functional updates by name: ``x.at[{"position": 3}].set(v)``, ``.add``, ``.get``, ...

        >>> x = named(jnp.zeros(3), "x")
        >>> x.at["x", 1].add(5.0).array.tolist()
        [0.0, 5.0, 0.0]
        """
        from .ops import arrays as _arrays
        return _arrays.at(self)

    def axis_indices(self, axis: AxisSelection):
        """Position of one axis (``None`` if absent), or a tuple of them for several.

        >>> named(jnp.zeros((2, 3)), ("batch", "embed")).axis_indices(("embed", "mlp"))
        (1, None)
        """
        if isinstance(axis, (Axis, str)):
            return self.axis_index(axis) if self.has_axis(axis) else None
        return tuple(self.axis_indices(a) for a in axis)

    def matches_axes(self, spec) -> bool:
        from .ops import arrays as _arrays
        return _arrays.matches_axes(self, spec)

    def scalar(self) -> jax.Array:
        """The array of a 0-d NamedArray (works under jit, unlike ``item``).

        >>> named(jnp.zeros(()), ()).scalar().shape
        ()
        """
        if self.ndim != 0:
            raise ValueError(f"scalar(): expected a 0-d NamedArray, got axes {_axes_str(self.axes)}")
        return self.array

    def tolist(self):
        return self.array.tolist()

    def tobytes(self, order="C"):
        return self.array.tobytes(order=order)

    def argsort(self, axis, *, stable: bool = False):
        from .ops import reductions as r
        return r.argsort(self, axis, stable=stable)

    def sort(self, axis):
        from .ops import reductions as r
        return r.sort(self, axis)

    def cumsum(self, axis, *, dtype=None):
        from .ops import reductions as r
        return r.cumsum(self, axis, dtype=dtype)

    def cumprod(self, axis, *, dtype=None):
        from .ops import reductions as r
        return r.cumprod(self, axis, dtype=dtype)

    def product(self, axis=None, *, dtype=None, where=None):
        from .ops import reductions as r
        return r.product(self, axis, dtype=dtype, where=where)

    def ptp(self, axis=None):
        from .ops import reductions as r
        return r.ptp(self, axis)

    def clip(self, a_min=None, a_max=None):
        from .ops import elementwise as e
        return e.clip(self, a_min, a_max)

    def round(self, decimals=0):
        from .ops import elementwise as e
        return e.round(self, decimals=decimals)

    def conj(self):
        from .ops import elementwise as e
        return e.conj(self)

    def conjugate(self):
        from .ops import elementwise as e
        return e.conjugate(self)

    def copy(self):
        from .ops import elementwise as e
        return e.copy(self)

    @property
    def real(self):
        from .ops import elementwise as e
        return e.real(self)

    @property
    def imag(self):
        from .ops import elementwise as e
        return e.imag(self)

    def ravel(self, new_axis_name: AxisSelector):
        from .ops import arrays as _arrays
        return _arrays.ravel(self, new_axis_name)

    def flatten(self, new_axis_name: AxisSelector):
        from .ops import arrays as _arrays
        return _arrays.flatten(self, new_axis_name)

    def trace(self, axis1: AxisSelector, axis2: AxisSelector, offset=0, dtype=None):
        from .ops import linalg as _linalg
        return _linalg.trace(self, axis1, axis2, offset=offset, dtype=dtype)

    def slice(self, *args, **kwargs):
        """``namax.slice(self, ...)``; like Haliax, a mapping first means ``slice(start, length)``."""
        from .ops import indexing as _indexing
        if args and isinstance(args[0], Mapping):
            return _indexing.slice(self, None, None, *args, **kwargs)
        return _indexing.slice(self, *args, **kwargs)

    def updated_slice(self, start: Mapping[AxisSelector, Any], update: "NamedArray"):
        from .ops import indexing as _indexing
        return _indexing.updated_slice(self, start, update)

    # --- operators: broadcast by name --------------------------------------------------
    def __add__(self, other): return binary(jnp.add, self, other)
    def __radd__(self, other): return binary(jnp.add, other, self)
    def __sub__(self, other): return binary(jnp.subtract, self, other)
    def __rsub__(self, other): return binary(jnp.subtract, other, self)
    def __mul__(self, other): return binary(jnp.multiply, self, other)
    def __rmul__(self, other): return binary(jnp.multiply, other, self)
    def __truediv__(self, other): return binary(jnp.true_divide, self, other)
    def __rtruediv__(self, other): return binary(jnp.true_divide, other, self)
    def __floordiv__(self, other): return binary(jnp.floor_divide, self, other)
    def __rfloordiv__(self, other): return binary(jnp.floor_divide, other, self)
    def __mod__(self, other): return binary(jnp.mod, self, other)
    def __rmod__(self, other): return binary(jnp.mod, other, self)
    def __pow__(self, other): return binary(jnp.power, self, other)
    def __rpow__(self, other): return binary(jnp.power, other, self)
    def __and__(self, other): return binary(jnp.bitwise_and, self, other)
    def __rand__(self, other): return binary(jnp.bitwise_and, other, self)
    def __or__(self, other): return binary(jnp.bitwise_or, self, other)
    def __ror__(self, other): return binary(jnp.bitwise_or, other, self)
    def __xor__(self, other): return binary(jnp.bitwise_xor, self, other)
    def __rxor__(self, other): return binary(jnp.bitwise_xor, other, self)
    def __lt__(self, other): return binary(jnp.less, self, other)
    def __le__(self, other): return binary(jnp.less_equal, self, other)
    def __gt__(self, other): return binary(jnp.greater, self, other)
    def __ge__(self, other): return binary(jnp.greater_equal, self, other)
    def __eq__(self, other): return binary(jnp.equal, self, other)  # type: ignore[override]
    def __ne__(self, other): return binary(jnp.not_equal, self, other)  # type: ignore[override]
    def __neg__(self): return unary(jnp.negative, self)
    def __pos__(self): return self
    def __abs__(self): return unary(jnp.abs, self)
    def __invert__(self): return unary(jnp.invert, self)


_ARRAY_KEY = jax.tree_util.GetAttrKey("array")
_new_object = object.__new__
_set_array = NamedArray.array.__set__  # the slots' descriptors: object.__setattr__ without its lookup
_set_axes = NamedArray.axes.__set__


def _flatten(x: NamedArray) -> tuple[tuple[Any], tuple[Axis, ...]]:
    return (x.array,), x.axes


def _flatten_with_keys(x: NamedArray) -> tuple[tuple[tuple[Any, Any]], tuple[Axis, ...]]:
    return ((_ARRAY_KEY, x.array),), x.axes


def _check_rank(axes: tuple[Axis, ...], array: Any) -> None:
    # Tree utilities rebuild us around None, object(), PartitionSpecs, ShapeDtypeStructs and,
    # in optax's per-leaf reductions (tree_norm, clip_by_global_norm), scalars: only an
    # array-like of rank >= 1 that differs from the axes is rejected (jax.vmap / lax.scan
    # over a NamedArray add or drop a dimension its axes cannot know about).
    ndim = getattr(array, "ndim", None)
    if ndim and ndim != len(axes) and isinstance(ndim, int):
        raise ValueError(
            f"A NamedArray with axes {_axes_str(axes)} was rebuilt around a value of shape "
            f"{getattr(array, 'shape', '?')} ({ndim} dimensions for {len(axes)} axes): a positional transform "
            f"(jax.vmap, jax.lax.scan/map, a tree_map that changes ranks) added or removed a dimension. Map "
            f"and scan by axis name with nx.vmap / nx.scan / nx.fold / nx.map instead"
        )


def _rebuild(cls: type, axes: tuple[Axis, ...], children: Sequence[Any]) -> NamedArray:
    array = children[0]
    _check_rank(axes, array)
    obj = _new_object(cls)
    _set_array(obj, array)
    _set_axes(obj, axes)
    return obj


def _unflatten(axes: tuple[Axis, ...], children: Sequence[Any]) -> NamedArray:
    """NamedArray's pytree unflatten: no __init__ and no re-validation of the axes (they come
    from a flattened NamedArray); only the rank check against positional transforms."""
    array = children[0]
    ndim = getattr(array, "ndim", None)
    if ndim and ndim != len(axes) and isinstance(ndim, int):
        _check_rank(axes, array)
    obj = _new_object(NamedArray)
    _set_array(obj, array)
    _set_axes(obj, axes)
    return obj


jax.tree_util.register_pytree_with_keys(NamedArray, _flatten_with_keys, _unflatten, _flatten)


def _axes_str(axes: Sequence[Axis]) -> str:
    return "(" + ", ".join(f"{a.name}:{a.size}" for a in axes) + ")"


def wrap(array: jax.Array, axes: Sequence[Axis]) -> NamedArray:
    """Tag ``array`` with the names of ``axes`` (a ``named_axes`` eqn) and wrap it.

    >>> import jax
    >>> jax.make_jaxpr(lambda a: wrap(a, (Axis("batch", 2),)).array)(jnp.zeros(2)).eqns[0].params
    {'axes': ('batch',)}
    """
    axes = tuple(axes)
    return NamedArray(tag(array, [a.name for a in axes]), axes)


def named(array: Any, axes: AxisSelection) -> NamedArray:
    """Name the dimensions of ``array``; names alone take their sizes from the array.

    >>> import jax.numpy as jnp
    >>> named(jnp.zeros((2, 3)), ("batch", "embed")).axes
    (Axis('batch', 2), Axis('embed', 3))
    """
    array = jnp.asarray(array)
    axes = ensure_tuple(axes)
    if len(axes) != array.ndim:
        raise ValueError(f"named: array of shape {array.shape} needs {array.ndim} axes, got {len(axes)}: {axes}")
    resolved = []
    for ax, size in zip(axes, array.shape):
        if isinstance(ax, str):
            ax = Axis(ax, size)
        elif not isinstance(ax, Axis):
            raise TypeError(f"named: expected an Axis or a name, got {ax!r}")
        resolved.append(ax)
    return wrap(array, NamedArray(array, resolved).axes)


def is_named(x: Any) -> bool:
    """True for a NamedArray.

    >>> import jax.numpy as jnp
    >>> is_named(named(jnp.zeros(2), "batch")), is_named(jnp.zeros(2))
    (True, False)
    """
    return isinstance(x, NamedArray)


def is_scalarish(x: Any) -> bool:
    """Python numbers, numpy scalars and 0-d arrays: values that broadcast with no axes.

    >>> import jax.numpy as jnp
    >>> is_scalarish(2.0), is_scalarish(jnp.zeros(())), is_scalarish(jnp.zeros(3))
    (True, True, False)
    """
    if isinstance(x, (numbers.Number, np.generic)):
        return True
    return getattr(x, "ndim", None) == 0 and not isinstance(x, NamedArray)


def align(x: NamedArray, axes: Sequence[Axis]) -> jax.Array:
    """``x.array`` permuted to the order of ``axes`` with size-1 dims where it lacks an axis.

    The result broadcasts against an array laid out as ``axes``. ``x`` may not have axes
    outside ``axes``.

    >>> B, E, M = Axis("batch", 2), Axis("embed", 3), Axis("mlp", 4)
    >>> align(named(jnp.zeros((3, 2)), (E, B)), (B, M, E)).shape
    (2, 1, 3)
    """
    names = [a.name for a in axes]
    own = x.axis_names
    missing = [n for n in own if n not in names]
    if missing:
        raise ValueError(f"align: axes {missing} of {_axes_str(x.axes)} are not in the target {_axes_str(axes)}")
    for ax in x.axes:
        target = axes[names.index(ax.name)]
        if target.size != ax.size:
            raise ValueError(
                f"align: axis {ax.name!r} has size {ax.size} in {_axes_str(x.axes)} but size {target.size} "
                f"in the target {_axes_str(axes)}"
            )
    order = sorted(range(len(own)), key=lambda i: names.index(own[i]))
    arr = x.array
    if order != list(range(len(own))):
        arr = jnp.transpose(arr, order)
    if len(own) == len(names):
        return arr
    present = set(own)
    shape = tuple(a.size if a.name in present else 1 for a in axes)
    return jnp.reshape(arr, shape)


def broadcast_arrays(*xs: Any, what: str = "operands") -> tuple[tuple[Axis, ...], list[Any]]:
    """Align NamedArrays (and scalars) on the union of their axes, by name.

    Returns the union axes and the raw arrays ready for a jnp elementwise op. Plain arrays
    with dimensions raise: positional axes never broadcast silently.

    >>> a, b = named(jnp.zeros(2), "batch"), named(jnp.zeros(3), "embed")
    >>> axes, raw = broadcast_arrays(a, b, 1.0)
    >>> axes, [getattr(r, "shape", r) for r in raw]
    ((Axis('batch', 2), Axis('embed', 3)), [(2, 1), (1, 3), 1.0])
    """
    named_ops = [x for x in xs if isinstance(x, NamedArray)]
    for x in xs:
        if not isinstance(x, NamedArray) and not is_scalarish(x) and x is not None:
            shape = getattr(x, "shape", None)
            what_it_is = f"an unnamed array of shape {shape}" if shape is not None else f"a {type(x).__name__}"
            raise TypeError(
                f"Cannot combine a NamedArray with {what_it_is}: name its axes first "
                f"(namax.named(array, axes)); only scalars broadcast implicitly"
            )
    axes = merge_axes(*(x.axes for x in named_ops), what=what)
    raw = [align(x, axes) if isinstance(x, NamedArray) else x for x in xs]
    return axes, raw


def binary(fn: Callable, a: Any, b: Any) -> Any:
    """Apply a jnp binary elementwise function, broadcasting NamedArrays by name.

    >>> a, b = named(jnp.arange(2), "batch"), named(jnp.arange(3), "embed")
    >>> binary(jnp.add, a, b).array.tolist()
    [[0, 1, 2], [1, 2, 3]]
    """
    if not isinstance(a, NamedArray) and not isinstance(b, NamedArray):
        return fn(a, b)
    axes, (ra, rb) = broadcast_arrays(a, b)
    return wrap(fn(ra, rb), axes)


def unary(fn: Callable, x: Any, *args, **kwargs) -> Any:
    """Apply a jnp elementwise function to a NamedArray (or a plain array).

    >>> unary(jnp.square, named(jnp.arange(3), "embed")).array.tolist()
    [0, 1, 4]
    """
    if isinstance(x, NamedArray):
        return wrap(fn(x.array, *args, **kwargs), x.axes)
    return fn(x, *args, **kwargs)
