"""Pooling over named axes: ``max_pool``, ``mean_pool`` and ``min_pool`` via ``jax.lax.reduce_window``."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from ..axis import Axis, AxisSpec, ensure_tuple
from ..named import NamedArray, _axes_str, wrap

Padding = Union[str, Sequence[tuple[int, int]]]


def _window(Window: AxisSpec, x: NamedArray, stride: Optional[Union[int, Sequence[int]]], padding: Padding,
            what: str) -> tuple[tuple[int, ...], tuple[int, ...], Any]:
    """Per-dimension window sizes, strides and padding for ``x`` (1 / no padding off the window axes)."""
    if not isinstance(x, NamedArray):
        raise TypeError(f"{what}: expected a NamedArray, got {type(x).__name__}")
    window = ensure_tuple(Window)
    for a in window:
        if not isinstance(a, Axis):
            raise TypeError(f"{what}: Window must be Axes whose sizes are the window sizes, got {a!r}")
        if not x.has_axis(a.name):
            raise ValueError(f"{what}: window axis {a.name!r} is not an axis of the input {_axes_str(x.axes)}")
    n = len(window)
    if stride is None:
        strides = tuple(a.size for a in window)
    elif isinstance(stride, int):
        strides = (stride,) * n
    else:
        strides = tuple(stride)
        if len(strides) != n:
            raise ValueError(f"{what}: {len(strides)} strides for {n} window axes")
    dims = [1] * x.ndim
    steps = [1] * x.ndim
    pads = [(0, 0)] * x.ndim
    if not isinstance(padding, str):
        padding = [tuple(p) for p in padding]
        if len(padding) != n:
            raise ValueError(f"{what}: {len(padding)} padding pairs for {n} window axes")
    for k, a in enumerate(window):
        i = x.axis_index(a.name)
        dims[i], steps[i] = a.size, strides[k]
        if not isinstance(padding, str):
            pads[i] = padding[k]
    if isinstance(padding, str):
        pads = jax.lax.padtype_to_pads(x.array.shape, dims, steps, padding.upper())
    return tuple(dims), tuple(steps), tuple(tuple(p) for p in pads)


def _extreme(dtype: Any, low: bool) -> Any:
    """The identity of max (``low``) or min for ``dtype``: -inf/+inf, or the integer limits."""
    if jnp.issubdtype(dtype, jnp.floating):
        return jnp.array(-jnp.inf if low else jnp.inf, dtype)
    info = jnp.iinfo(dtype)
    return jnp.array(info.min if low else info.max, dtype)


def _pool(x: NamedArray, out: jax.Array) -> NamedArray:
    return wrap(out, tuple(a.resize(s) for a, s in zip(x.axes, out.shape)))


def max_pool(Window: AxisSpec, x: NamedArray, stride: Optional[Union[int, Sequence[int]]] = None,
             padding: Padding = "VALID") -> NamedArray:
    """The maximum over windows; ``Window`` names the pooled axes, its sizes are the window sizes.

    ``stride`` defaults to the window size; ``padding`` is "VALID", "SAME" or (lo, hi) pairs.
    Pooled axes keep their names with their new sizes.

    >>> import jax.numpy as jnp, namax as nx
    >>> x = nx.named(jnp.arange(4.0), "x")
    >>> max_pool(nx.Axis("x", 2), x).array.tolist()
    [1.0, 3.0]
    """
    dims, steps, pads = _window(Window, x, stride, padding, "max_pool")
    return _pool(x, jax.lax.reduce_window(x.array, _extreme(x.dtype, True), jax.lax.max, dims, steps, pads))


def min_pool(Window: AxisSpec, x: NamedArray, stride: Optional[Union[int, Sequence[int]]] = None,
             padding: Padding = "VALID") -> NamedArray:
    """The minimum over windows (see :func:`max_pool`).

    >>> import jax.numpy as jnp, namax as nx
    >>> min_pool(nx.Axis("x", 2), nx.named(jnp.arange(4.0), "x")).array.tolist()
    [0.0, 2.0]
    """
    dims, steps, pads = _window(Window, x, stride, padding, "min_pool")
    return _pool(x, jax.lax.reduce_window(x.array, _extreme(x.dtype, False), jax.lax.min, dims, steps, pads))


def mean_pool(Window: AxisSpec, x: NamedArray, stride: Optional[Union[int, Sequence[int]]] = None,
              padding: Padding = "VALID", count_include_pad: bool = False) -> NamedArray:
    """The mean over windows (see :func:`max_pool`); padding counts only if ``count_include_pad``.

    >>> import jax.numpy as jnp, namax as nx
    >>> mean_pool(nx.Axis("x", 2), nx.named(jnp.arange(4.0), "x")).array.tolist()
    [0.5, 2.5]
    """
    dims, steps, pads = _window(Window, x, stride, padding, "mean_pool")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    total = jax.lax.reduce_window(x.array, jnp.array(0, x.dtype), jax.lax.add, dims, steps, pads)
    if count_include_pad:
        count = float(jnp.prod(jnp.array(dims)))
    else:
        ones = jnp.ones(x.array.shape, x.array.dtype)
        count = jax.lax.reduce_window(ones, jnp.array(0, x.dtype), jax.lax.add, dims, steps, pads)
    return _pool(x, total / count)


__all__ = ["max_pool", "min_pool", "mean_pool"]
