"""Reductions and scans over named axes (``axis=None`` means every axis)."""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from ..axis import AxisSelection, AxisSelector, ensure_tuple
from ..named import NamedArray, align, wrap


def _check_named(x: Any, what: str) -> None:
    if not isinstance(x, NamedArray):
        raise TypeError(f"{what}: expected a NamedArray, got {type(x).__name__}; use jnp.{what} on plain arrays")


def _reduction_axes(x: NamedArray, axis: Optional[AxisSelection]) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(x.ndim))
    idx = tuple(x.axis_index(a) for a in ensure_tuple(axis))
    if len(set(idx)) != len(idx):
        raise ValueError(f"Axis given twice in reduction: {axis!r}")
    return idx


def _reduce(fn: Callable, x: Any, axis: Optional[AxisSelection], where: Any = None, **kwargs) -> Any:
    _check_named(x, fn.__name__)
    dims = _reduction_axes(x, axis)
    array = x.array
    if where is not None:
        if not isinstance(where, NamedArray):
            raise TypeError("where= must be a NamedArray (broadcast by name against the input)")
        kwargs["where"] = jnp.broadcast_to(align(where, x.axes), array.shape)
    out = fn(array, axis=dims, **kwargs)
    kept = tuple(ax for i, ax in enumerate(x.axes) if i not in dims)
    return wrap(out, kept)


def _make(fn: Callable, name: str, supports_where: bool = True) -> Callable:
    def op(x: NamedArray, axis: Optional[AxisSelection] = None, *, where: Any = None, **kwargs) -> NamedArray:
        if where is not None and not supports_where:
            raise TypeError(f"{name} does not take where= (jnp.{fn.__name__} has no mask)")
        return _reduce(fn, x, axis, where=where, **kwargs)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = (
        f"``jnp.{fn.__name__}`` over the named ``axis`` (one axis, several, or ``None`` for all).\n\n"
        f">>> import namax as nx\n>>> B, E = nx.Axis('b', 2), nx.Axis('e', 3)\n"
        f">>> nx.{name}(nx.ones((B, E)), E).axes\n(Axis('b', 2),)\n"
    )
    return op


# name -> (function, whether it takes a where= mask)
REDUCTIONS = {
    "sum": (jnp.sum, True), "mean": (jnp.mean, True), "max": (jnp.max, True), "min": (jnp.min, True),
    "prod": (jnp.prod, True), "product": (jnp.prod, True), "std": (jnp.std, True), "var": (jnp.var, True),
    "any": (jnp.any, True), "all": (jnp.all, True), "logsumexp": (jax.nn.logsumexp, True),
    "ptp": (jnp.ptp, False),
    "nansum": (jnp.nansum, True), "nanmean": (jnp.nanmean, True), "nanmax": (jnp.nanmax, True),
    "nanmin": (jnp.nanmin, True), "nanprod": (jnp.nanprod, True), "nanstd": (jnp.nanstd, True),
    "nanvar": (jnp.nanvar, True),
}
for _name, (_fn, _where) in REDUCTIONS.items():
    globals()[_name] = _make(_fn, _name, _where)
del _name, _fn, _where
amax = max  # noqa: F821  (defined by the table above)
amin = min  # noqa: F821


def _arg(fn: Callable, x: NamedArray, axis: Optional[AxisSelector]) -> NamedArray:
    _check_named(x, fn.__name__)
    if axis is None:
        # index into the flattened array, as jnp does
        return wrap(fn(x.array.reshape(-1)), ())
    if not isinstance(axis, (str,)) and not hasattr(axis, "name"):
        raise TypeError(f"{fn.__name__} takes one axis, got {axis!r}")
    i = x.axis_index(axis)
    return wrap(fn(x.array, axis=i), x.axes[:i] + x.axes[i + 1 :])


def _arg_op(fn: Callable, name: str) -> Callable:
    def op(x: NamedArray, axis: Optional[AxisSelector] = None) -> NamedArray:
        return _arg(fn, x, axis)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = (
        f"``jnp.{fn.__name__}`` along one named axis (``None``: index into the flattened array).\n\n"
        f">>> import jax.numpy as jnp, namax as nx\n"
        f">>> x = nx.named(jnp.array([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]]), ('batch', 'vocab'))\n"
        f">>> nx.{name}(x, 'vocab').array.tolist()\n{_ARG_EXAMPLES[name]}\n"
    )
    return op


_ARG_EXAMPLES = {"argmax": "[1, 0]", "argmin": "[0, 1]", "nanargmax": "[1, 0]", "nanargmin": "[0, 1]"}
ARG_REDUCTIONS = {"argmax": jnp.argmax, "argmin": jnp.argmin, "nanargmax": jnp.nanargmax, "nanargmin": jnp.nanargmin}
for _name, _fn in ARG_REDUCTIONS.items():
    globals()[_name] = _arg_op(_fn, _name)
del _name, _fn


def _scan(fn: Callable, name: str) -> Callable:
    def op(x: NamedArray, axis: AxisSelector, **kwargs) -> NamedArray:
        _check_named(x, name)
        return wrap(fn(x.array, axis=x.axis_index(axis), **kwargs), x.axes)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = (
        f"``jnp.{fn.__name__}`` along one named axis; axes unchanged.\n\n"
        f">>> import namax as nx\n"
        f">>> nx.{name}(nx.arange(nx.Axis('x', 4), start=1), 'x').array.tolist()\n"
        f"{_SCAN_EXAMPLES[name]}\n"
    )
    return op


_SCAN_EXAMPLES = {"cumsum": "[1, 3, 6, 10]", "cumprod": "[1, 2, 6, 24]",
                  "nancumsum": "[1, 3, 6, 10]", "nancumprod": "[1, 2, 6, 24]"}
SCANS = {"cumsum": jnp.cumsum, "cumprod": jnp.cumprod, "nancumsum": jnp.nancumsum, "nancumprod": jnp.nancumprod}
for _name, _fn in SCANS.items():
    globals()[_name] = _scan(_fn, _name)
del _name, _fn


def cummax(x: NamedArray, axis: AxisSelector) -> NamedArray:
    """Running maximum along one named axis.

    >>> import jax.numpy as jnp, namax as nx
    >>> nx.cummax(nx.named(jnp.array([1, 3, 2, 5]), "x"), "x").array.tolist()
    [1, 3, 3, 5]
    """
    _check_named(x, "cummax")
    return wrap(jax.lax.cummax(x.array, axis=x.axis_index(axis)), x.axes)


def cummin(x: NamedArray, axis: AxisSelector) -> NamedArray:
    """Running minimum along one named axis.

    >>> import jax.numpy as jnp, namax as nx
    >>> nx.cummin(nx.named(jnp.array([4, 3, 5, 1]), "x"), "x").array.tolist()
    [4, 3, 3, 1]
    """
    _check_named(x, "cummin")
    return wrap(jax.lax.cummin(x.array, axis=x.axis_index(axis)), x.axes)


def cumlogsumexp(x: NamedArray, axis: AxisSelector) -> NamedArray:
    """Running log-sum-exp along one named axis.

    >>> import namax as nx
    >>> x = nx.zeros(nx.Axis("x", 3))
    >>> [round(v, 4) for v in nx.cumlogsumexp(x, "x").array.tolist()]  # log 1, log 2, log 3
    [0.0, 0.6931, 1.0986]
    """
    _check_named(x, "cumlogsumexp")
    return wrap(jax.lax.cumlogsumexp(x.array, axis=x.axis_index(axis)), x.axes)


def sort(x: NamedArray, axis: AxisSelector) -> NamedArray:
    """Sort along one named axis.

    >>> import jax.numpy as jnp, namax as nx
    >>> nx.sort(nx.named(jnp.array([3, 1, 2]), "x"), "x").array.tolist()
    [1, 2, 3]
    """
    _check_named(x, "sort")
    return wrap(jnp.sort(x.array, axis=x.axis_index(axis)), x.axes)


def argsort(x: NamedArray, axis: AxisSelector, *, stable: bool = False) -> NamedArray:
    """Indices that sort along one named axis (``stable=True`` keeps ties in order).

    >>> import jax.numpy as jnp, namax as nx
    >>> nx.argsort(nx.named(jnp.array([3, 1, 2]), "x"), "x").array.tolist()
    [1, 2, 0]
    """
    _check_named(x, "argsort")
    if axis is None:
        raise TypeError(
            f"argsort needs one axis of {x.axis_names}; to sort every element, flatten first: "
            "nx.argsort(nx.flatten(x, 'flat'), 'flat')"
        )
    return wrap(jnp.argsort(x.array, axis=x.axis_index(axis), stable=stable), x.axes)


__all__ = [*REDUCTIONS, "amax", "amin", *ARG_REDUCTIONS, *SCANS, "cummax", "cummin", "cumlogsumexp",
           "sort", "argsort"]
