"""Selecting and counting by value: top_k, the unique family, searchsorted, nonzero, bincount.

Ops whose output size depends on the data take the output axis as an argument (``Unique``,
``size=``, ``Counts``), so they work under ``jit``. (``sort``/``argsort`` are in reductions.)
"""

from __future__ import annotations

import numbers
from typing import Any, Optional

import jax
import jax.numpy as jnp

from ..axis import Axis, AxisSelector, axis_name
from ..named import NamedArray, _axes_str, align, is_scalarish, wrap


def _check_named(x: Any, what: str, arg: str = "array") -> None:
    if not isinstance(x, NamedArray):
        raise TypeError(f"{what}: {arg} must be a NamedArray, got {type(x).__name__}")


def _check_size_axis(axis: Any, what: str, arg: str) -> Axis:
    if not isinstance(axis, Axis):
        raise TypeError(
            f"{what}: {arg} must be an Axis (with a size: the output's static length), got {axis!r}"
        )
    return axis


def _check_one_dim(x: NamedArray, what: str, arg: str) -> None:
    if x.ndim != 1:
        raise ValueError(f"{what}: {arg} must have exactly one axis, got {_axes_str(x.axes)}")


def top_k(
    arr: NamedArray, axis: AxisSelector, k: int, new_axis: Optional[AxisSelector] = None
) -> tuple[NamedArray, NamedArray]:
    """The ``k`` largest values along ``axis`` (descending) and their indices along it.

    In both results ``axis`` is replaced, in place, by ``new_axis`` of size ``k`` (default:
    ``axis`` resized to ``k``).

    >>> import jax.numpy as jnp, namax as nx
    >>> x = nx.named(jnp.array([[1, 9, 3], [7, 2, 8]]), ("batch", "vocab"))
    >>> values, indices = nx.top_k(x, "vocab", 2, new_axis="best")
    >>> values.axes, values.array.tolist(), indices.array.tolist()
    ((Axis('batch', 2), Axis('best', 2)), [[9, 3], [8, 7]], [[1, 2], [2, 0]])
    """
    _check_named(arr, "top_k", "arr")
    i = arr.axis_index(axis)
    old = arr.axes[i]
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"top_k: k must be a static int, got {k!r}")
    if not 0 <= k <= old.size:
        raise ValueError(f"top_k: k={k} is out of range for axis {old.name!r} of size {old.size}")
    if new_axis is None:
        new = old.resize(int(k))
    elif isinstance(new_axis, Axis):
        if new_axis.size != k:
            raise ValueError(f"top_k: new_axis {new_axis} must have size k={k}")
        new = new_axis
    else:
        new = Axis(axis_name(new_axis), int(k))
    values, indices = jax.lax.top_k(jnp.moveaxis(arr.array, i, -1), int(k))
    out_axes = arr.axes[:i] + (new,) + arr.axes[i + 1 :]
    return wrap(jnp.moveaxis(values, -1, i), out_axes), wrap(jnp.moveaxis(indices, -1, i), out_axes)


def unique(
    array: NamedArray,
    Unique: Axis,
    *,
    return_index: bool = False,
    return_inverse: bool = False,
    return_counts: bool = False,
    axis: Optional[AxisSelector] = None,
    fill_value: Any = None,
) -> NamedArray | tuple[NamedArray, ...]:
    """The sorted distinct values of ``array`` along the new axis ``Unique`` (``jnp.unique``).

    ``Unique.size`` is the output length, as ``jnp.unique(size=...)``: extra slots hold
    ``fill_value`` (default: the smallest value); if there are more distinct values, only the
    ``Unique.size`` smallest are kept. With ``axis``, the distinct slices along that axis are
    found and ``Unique`` replaces it. Also returned, in this order, when asked: the index of
    each value's first occurrence (axis ``Unique``), the inverse (the position in the result
    of each element: ``array``'s axes, or just ``axis``) and the counts (axis ``Unique``).

    >>> import jax.numpy as jnp, namax as nx
    >>> x = nx.named(jnp.array([3, 1, 3, 2]), "x")
    >>> values, counts = nx.unique(x, nx.Axis("value", 3), return_counts=True)
    >>> values.array.tolist(), counts.array.tolist()
    ([1, 2, 3], [1, 1, 2])
    """
    _check_named(array, "unique")
    _check_size_axis(Unique, "unique", "Unique")
    kwargs = dict(size=Unique.size, fill_value=fill_value, return_index=return_index,
                  return_inverse=return_inverse, return_counts=return_counts)
    if axis is None:
        out = jnp.unique(array.array, **kwargs)
        values_axes: tuple[Axis, ...] = (Unique,)
        inverse_axes = array.axes
    else:
        i = array.axis_index(axis)
        out = jnp.unique(array.array, axis=i, **kwargs)
        values_axes = array.axes[:i] + (Unique,) + array.axes[i + 1 :]
        inverse_axes = (array.axes[i],)
    if not (return_index or return_inverse or return_counts):
        return wrap(out, values_axes)
    out = list(out)
    results = [wrap(out.pop(0), values_axes)]
    if return_index:
        results.append(wrap(out.pop(0), (Unique,)))
    if return_inverse:
        results.append(wrap(jnp.reshape(out.pop(0), tuple(a.size for a in inverse_axes)), inverse_axes))
    if return_counts:
        results.append(wrap(out.pop(0), (Unique,)))
    return tuple(results)


def _unique_variant(name: str, flags: tuple[str, ...], returns: str, example: str):
    def op(array: NamedArray, Unique: Axis, *, axis: Optional[AxisSelector] = None, fill_value: Any = None):
        return unique(array, Unique, axis=axis, fill_value=fill_value, **{f: True for f in flags})

    op.__name__ = op.__qualname__ = name
    op.__doc__ = (
        f"``unique`` returning {returns} (see ``unique`` for ``Unique``, ``axis``, ``fill_value``).\n\n"
        f">>> import jax.numpy as jnp, namax as nx\n"
        f">>> x = nx.named(jnp.array([3, 1, 3]), 'x')\n{example}"
    )
    return op


# name -> (the unique() flags it sets, what it returns, a doctest)
UNIQUE_VARIANTS = {
    "unique_values": ((), "the values only",
                      ">>> nx.unique_values(x, nx.Axis('value', 2)).array.tolist()\n[1, 3]\n"),
    "unique_counts": (("return_counts",), "``(values, counts)``",
                      ">>> [o.array.tolist() for o in nx.unique_counts(x, nx.Axis('value', 2))]\n[[1, 3], [1, 2]]\n"),
    "unique_inverse": (("return_inverse",), "``(values, inverse)``",
                       ">>> [o.array.tolist() for o in nx.unique_inverse(x, nx.Axis('value', 2))]\n"
                       "[[1, 3], [1, 0, 1]]\n"),
    "unique_all": (("return_index", "return_inverse", "return_counts"), "``(values, indices, inverse, counts)``",
                   ">>> [o.array.tolist() for o in nx.unique_all(x, nx.Axis('value', 2))]\n"
                   "[[1, 3], [1, 0], [1, 0, 1], [1, 2]]\n"),
}
for _name, (_flags, _returns, _example) in UNIQUE_VARIANTS.items():
    globals()[_name] = _unique_variant(_name, _flags, _returns, _example)
del _name, _flags, _returns, _example


def searchsorted(
    a: NamedArray, v: Any, *, side: str = "left", sorter: Any = None, method: str = "scan"
) -> NamedArray:
    """Where each value of ``v`` would go in the sorted one-axis ``a`` (``jnp.searchsorted``).

    The result has ``v``'s axes (none for a scalar ``v``). ``sorter``, if given, is the
    permutation sorting ``a`` (a NamedArray with ``a``'s axis).

    >>> import jax.numpy as jnp, namax as nx
    >>> a = nx.named(jnp.array([1, 3, 5, 7]), "edge")
    >>> nx.searchsorted(a, nx.named(jnp.array([0, 4, 7]), "query"), side="right").array.tolist()
    [0, 2, 4]
    """
    _check_named(a, "searchsorted", "a")
    _check_one_dim(a, "searchsorted", "a")
    if not isinstance(v, NamedArray):
        if not is_scalarish(v):
            raise TypeError(
                f"searchsorted: v must be a NamedArray or a scalar, got an unnamed array of shape {jnp.shape(v)}; "
                "name its axes with namax.named"
            )
        v = wrap(jnp.asarray(v), ())
    raw_sorter = None
    if sorter is not None:
        _check_named(sorter, "searchsorted", "sorter")
        if sorter.axes != a.axes:
            raise ValueError(f"searchsorted: sorter has axes {_axes_str(sorter.axes)}, a has {_axes_str(a.axes)}")
        raw_sorter = sorter.array
    out = jnp.searchsorted(a.array, v.array, side=side, sorter=raw_sorter, method=method)
    return wrap(out, v.axes)


def nonzero(array: NamedArray, *, size: Axis, fill_value: int = 0) -> tuple[NamedArray, ...]:
    """Indices of the nonzero elements: one NamedArray per axis of ``array`` (in its order), each
    along ``size``.

    ``size.size`` is the static number of hits kept (``jnp.nonzero(size=...)``): missing ones
    are ``fill_value``, extra ones are dropped.

    >>> import jax.numpy as jnp, namax as nx
    >>> x = nx.named(jnp.array([[0, 5], [7, 0]]), ("row", "col"))
    >>> rows, cols = nx.nonzero(x, size=nx.Axis("hit", 3), fill_value=-1)
    >>> rows.array.tolist(), cols.array.tolist()
    ([0, 1, -1], [1, 0, -1])
    """
    _check_named(array, "nonzero")
    _check_size_axis(size, "nonzero", "size")
    return tuple(wrap(i, (size,)) for i in jnp.nonzero(array.array, size=size.size, fill_value=fill_value))


def bincount(x: NamedArray, Counts: Axis, *, weights: Any = None, minlength: int = 0) -> NamedArray:
    """How often each value ``0 .. Counts.size - 1`` occurs in the one-axis ``x`` (summing
    ``weights`` instead of 1 if given); values outside that range are not counted, as in
    ``jnp.bincount(length=...)``.

    >>> import jax.numpy as jnp, namax as nx
    >>> x = nx.named(jnp.array([0, 2, 2, 3]), "token")
    >>> nx.bincount(x, nx.Axis("value", 4)).array.tolist()
    [1, 0, 2, 1]
    """
    _check_named(x, "bincount", "x")
    _check_one_dim(x, "bincount", "x")
    _check_size_axis(Counts, "bincount", "Counts")
    if minlength > Counts.size:
        raise ValueError(
            f"bincount: minlength={minlength} is larger than the Counts axis {Counts.name!r} of size {Counts.size}"
        )
    raw_weights = None
    if weights is not None:
        if not isinstance(weights, NamedArray):
            raise TypeError(f"bincount: weights must be a NamedArray with x's axis {_axes_str(x.axes)}")
        raw_weights = jnp.broadcast_to(align(weights, x.axes), x.array.shape)
    return wrap(jnp.bincount(x.array, weights=raw_weights, minlength=minlength, length=Counts.size), (Counts,))


__all__ = ["top_k", "unique", *UNIQUE_VARIANTS, "searchsorted", "nonzero", "bincount"]
