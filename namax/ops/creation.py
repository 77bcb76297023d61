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
    """An array of ``fill_value`` with the given axes."""
    axes = _axes(shape)
    return wrap(jnp.full(tuple(a.size for a in axes), fill_value, dtype=dtype), axes)


def zeros(shape: AxisSpec, dtype: Any = None) -> NamedArray:
    """Zeros with the given axes: ``zeros((Batch, Embed))``."""
    return full(shape, 0, dtype=dtype or jnp.float32)


def ones(shape: AxisSpec, dtype: Any = None) -> NamedArray:
    """Ones with the given axes: ``ones((Batch, Embed))``."""
    return full(shape, 1, dtype=dtype or jnp.float32)


def full_like(x: NamedArray, fill_value: Any, dtype: Any = None) -> NamedArray:
    """``fill_value`` with the axes (and by default the dtype) of ``x``."""
    return full(x.axes, fill_value, dtype=dtype or x.dtype)


def zeros_like(x: NamedArray, dtype: Any = None) -> NamedArray:
    """Zeros with the axes and dtype of ``x``."""
    return full_like(x, 0, dtype)


def ones_like(x: NamedArray, dtype: Any = None) -> NamedArray:
    """Ones with the axes and dtype of ``x``."""
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
    """An array with the given axes whose values are unspecified (``jnp.empty``)."""
    axes = _axes(shape)
    return wrap(jnp.empty(tuple(a.size for a in axes), dtype=dtype or jnp.float32), axes)


def empty_like(x: NamedArray, dtype: Any = None) -> NamedArray:
    """An array with the axes and dtype of ``x`` whose values are unspecified."""
    return empty(x.axes, dtype=dtype or x.dtype)


__all__ = [
    "arange", "full", "zeros", "ones", "full_like", "zeros_like", "ones_like",
    "linspace", "logspace", "empty", "empty_like",
]
