"""Creating NamedArrays: arange, linspace, logspace, zeros, ones, full, empty and their
``*_like`` forms."""

from __future__ import annotations

from typing import Any, Optional

import jax.numpy as jnp

from ..axis import Axis, AxisSpec, ensure_tuple
from ..named import NamedArray, wrap


def _axes(shape: AxisSpec) -> tuple[Axis, ...]:
    axes = ensure_tuple(shape)
    for a in axes:
        if not isinstance(a, Axis):
            raise TypeError(f"creation functions need Axis objects (with sizes), got {a!r}")
    return axes


def arange(axis: Axis, *, start: int = 0, step: int = 1, dtype: Any = None) -> NamedArray:
    """``start, start + step, ...`` along ``axis`` (``axis.size`` values).

    >>> import namax as nx
    >>> nx.arange(nx.Axis("position", 3)).array.tolist()
    [0, 1, 2]
    """
    if not isinstance(axis, Axis):
        raise TypeError(f"arange needs an Axis (with a size), got {axis!r}")
    return wrap(jnp.arange(start, start + step * axis.size, step, dtype=dtype)[: axis.size], (axis,))


def full(shape: AxisSpec, fill_value: Any, dtype: Any = None) -> NamedArray:
    """An array of ``fill_value`` with the given axes.

    >>> import namax as nx
    >>> nx.full(nx.Axis("x", 2), 7).array.tolist()
    [7, 7]
    """
    axes = _axes(shape)
    return wrap(jnp.full(tuple(a.size for a in axes), fill_value, dtype=dtype), axes)


def zeros(shape: AxisSpec, dtype: Any = None) -> NamedArray:
    """Zeros with the given axes: ``zeros((Batch, Embed))``.

    >>> import namax as nx
    >>> x = nx.zeros(nx.make_axes(batch=2, embed=3))
    >>> x.shape, x.dtype
    ({'batch': 2, 'embed': 3}, dtype('float32'))
    """
    return full(shape, 0, dtype=dtype or jnp.float32)


def ones(shape: AxisSpec, dtype: Any = None) -> NamedArray:
    """Ones with the given axes: ``ones((Batch, Embed))``.

    >>> import namax as nx
    >>> nx.ones(nx.make_axes(batch=2, embed=3)).array.tolist()
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    return full(shape, 1, dtype=dtype or jnp.float32)


def full_like(x: NamedArray, fill_value: Any, dtype: Any = None) -> NamedArray:
    """``fill_value`` with the axes (and by default the dtype) of ``x``.

    >>> import namax as nx
    >>> nx.full_like(nx.arange(nx.Axis("x", 3)), 5).array.tolist()
    [5, 5, 5]
    """
    return full(x.axes, fill_value, dtype=dtype or x.dtype)


def zeros_like(x: NamedArray, dtype: Any = None) -> NamedArray:
    """Zeros with the axes and dtype of ``x``.

    >>> import namax as nx
    >>> z = nx.zeros_like(nx.arange(nx.Axis("x", 3)))
    >>> z.axes, z.dtype
    ((Axis('x', 3),), dtype('int32'))
    """
    return full_like(x, 0, dtype)


def ones_like(x: NamedArray, dtype: Any = None) -> NamedArray:
    """Ones with the axes and dtype of ``x``.

    >>> import jax.numpy as jnp, namax as nx
    >>> nx.ones_like(nx.zeros(nx.Axis("x", 2)), dtype=jnp.int8).array.tolist()
    [1, 1]
    """
    return full_like(x, 1, dtype)


def linspace(axis: Axis, *, start: Any, stop: Any, endpoint: bool = True, dtype: Any = None) -> NamedArray:
    """``axis.size`` evenly spaced values from ``start`` to ``stop`` (``jnp.linspace``).

    >>> import namax as nx
    >>> nx.linspace(nx.Axis("x", 3), start=0.0, stop=1.0).array.tolist()
    [0.0, 0.5, 1.0]
    """
    if not isinstance(axis, Axis):
        raise TypeError(f"linspace needs an Axis (with a size), got {axis!r}")
    return wrap(jnp.linspace(start, stop, axis.size, endpoint=endpoint, dtype=dtype), (axis,))


def logspace(
    axis: Axis, *, start: Any, stop: Any, endpoint: bool = True, base: Any = 10.0, dtype: Any = None
) -> NamedArray:
    """``base ** linspace(start, stop)`` along ``axis`` (``jnp.logspace``).

    >>> import namax as nx
    >>> nx.logspace(nx.Axis("x", 3), start=0.0, stop=2.0).array.tolist()
    [1.0, 10.0, 100.0]
    """
    if not isinstance(axis, Axis):
        raise TypeError(f"logspace needs an Axis (with a size), got {axis!r}")
    return wrap(jnp.logspace(start, stop, axis.size, endpoint=endpoint, base=base, dtype=dtype), (axis,))


def empty(shape: AxisSpec, dtype: Any = None) -> NamedArray:
    """An array with the given axes whose values are unspecified (``jnp.empty``).

    >>> import namax as nx
    >>> nx.empty(nx.make_axes(batch=2, embed=3)).shape
    {'batch': 2, 'embed': 3}
    """
    axes = _axes(shape)
    return wrap(jnp.empty(tuple(a.size for a in axes), dtype=dtype or jnp.float32), axes)


def empty_like(x: NamedArray, dtype: Any = None) -> NamedArray:
    """An array with the axes and dtype of ``x`` whose values are unspecified.

    >>> import namax as nx
    >>> e = nx.empty_like(nx.arange(nx.Axis("x", 3)))
    >>> e.axes, e.dtype
    ((Axis('x', 3),), dtype('int32'))
    """
    return empty(x.axes, dtype=dtype or x.dtype)


__all__ = [
    "arange", "full", "zeros", "ones", "full_like", "zeros_like", "ones_like",
    "linspace", "logspace", "empty", "empty_like",
]
