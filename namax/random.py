"""Random NamedArrays: ``jax.random`` with axes for shapes (``namax.random.normal(key, (B, E))``).

With scalar parameters each function draws exactly what its ``jax.random`` namesake draws
for the positional shape ``tuple(a.size for a in shape)``. Parameters may also be
NamedArrays; they broadcast against ``shape`` by name (their axes must be among it).
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from .axis import Axis, AxisSelector, AxisSpec, ensure_tuple, merge_axes
from .named import NamedArray, _axes_str, align, wrap


def _shape(shape: AxisSpec, what: str) -> tuple[Axis, ...]:
    axes = ensure_tuple(shape)
    for a in axes:
        if not isinstance(a, Axis):
            raise TypeError(f"{what}: shape must be an Axis or a tuple of Axes (with sizes), got {a!r}")
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise ValueError(f"{what}: duplicate axis names in shape {_axes_str(axes)}")
    return axes


def _param(value: Any, axes: tuple[Axis, ...], arg: str, what: str) -> Any:
    """A parameter as a raw value broadcastable against ``axes`` (NamedArrays aligned by name)."""
    if isinstance(value, NamedArray):
        extra = [a.name for a in value.axes if a.name not in {b.name for b in axes}]
        if extra:
            raise ValueError(
                f"{what}: {arg} has axes {extra} that are not in shape {_axes_str(axes)}"
            )
        merge_axes(value.axes, axes, what=f"{arg} and shape")
        return align(value, axes)
    if getattr(value, "ndim", 0) != 0:
        raise TypeError(
            f"{what}: {arg} is an unnamed array of shape {value.shape}; pass a scalar or a NamedArray"
        )
    return value


def _sizes(axes: tuple[Axis, ...]) -> tuple[int, ...]:
    return tuple(a.size for a in axes)


def normal(key: jax.Array, shape: AxisSpec, dtype: Any = jnp.float32) -> NamedArray:
    """Standard normal samples with the given axes.

    >>> import jax, namax as nx
    >>> nx.random.normal(jax.random.key(0), (nx.Axis("batch", 2), nx.Axis("embed", 3))).axes
    (Axis('batch', 2), Axis('embed', 3))
    """
    axes = _shape(shape, "normal")
    return wrap(jax.random.normal(key, _sizes(axes), dtype), axes)


def uniform(
    key: jax.Array, shape: AxisSpec, dtype: Any = jnp.float32, minval: Any = 0.0, maxval: Any = 1.0
) -> NamedArray:
    """Uniform samples in ``[minval, maxval)`` with the given axes.

    >>> import jax, namax as nx
    >>> x = nx.random.uniform(jax.random.key(0), nx.Axis("x", 4), minval=2.0, maxval=3.0)
    >>> bool(((x.array >= 2) & (x.array < 3)).all())
    True
    """
    axes = _shape(shape, "uniform")
    lo = _param(minval, axes, "minval", "uniform")
    hi = _param(maxval, axes, "maxval", "uniform")
    return wrap(jax.random.uniform(key, _sizes(axes), dtype, lo, hi), axes)


def bernoulli(key: jax.Array, shape: AxisSpec, p: Any = 0.5) -> NamedArray:
    """Booleans that are True with probability ``p`` (a scalar or a NamedArray).

    >>> import jax, namax as nx
    >>> nx.random.bernoulli(jax.random.key(0), nx.Axis("x", 3), 1.0).array.tolist()
    [True, True, True]
    """
    axes = _shape(shape, "bernoulli")
    return wrap(jax.random.bernoulli(key, _param(p, axes, "p", "bernoulli"), _sizes(axes)), axes)


def randint(
    key: jax.Array, shape: AxisSpec, minval: Any, maxval: Any, dtype: Any = jnp.int32
) -> NamedArray:
    """Integers in ``[minval, maxval)`` with the given axes.

    >>> import jax, namax as nx
    >>> nx.random.randint(jax.random.key(0), nx.Axis("x", 3), 5, 6).array.tolist()
    [5, 5, 5]
    """
    axes = _shape(shape, "randint")
    lo = _param(minval, axes, "minval", "randint")
    hi = _param(maxval, axes, "maxval", "randint")
    return wrap(jax.random.randint(key, _sizes(axes), lo, hi, dtype), axes)


def truncated_normal(
    key: jax.Array, shape: AxisSpec, lower: Any, upper: Any, dtype: Any = jnp.float32
) -> NamedArray:
    """Normal samples truncated to ``(lower, upper)``.

    >>> import jax, namax as nx
    >>> x = nx.random.truncated_normal(jax.random.key(0), nx.Axis("x", 8), -1.0, 1.0)
    >>> bool((abs(x.array) <= 1).all())
    True
    """
    axes = _shape(shape, "truncated_normal")
    lo = _param(lower, axes, "lower", "truncated_normal")
    hi = _param(upper, axes, "upper", "truncated_normal")
    return wrap(jax.random.truncated_normal(key, lo, hi, _sizes(axes), dtype), axes)


def gumbel(key: jax.Array, shape: AxisSpec, dtype: Any = jnp.float32) -> NamedArray:
    """Standard Gumbel samples with the given axes.

    >>> import jax, namax as nx
    >>> g = nx.random.gumbel(jax.random.key(0), nx.make_axes(batch=2, vocab=3))
    >>> g.axes, g.dtype
    ((Axis('batch', 2), Axis('vocab', 3)), dtype('float32'))
    """
    axes = _shape(shape, "gumbel")
    return wrap(jax.random.gumbel(key, _sizes(axes), dtype), axes)


def categorical(
    key: jax.Array, logits: NamedArray, axis: AxisSelector, shape: Optional[AxisSpec] = None
) -> NamedArray:
    """Indices sampled along ``axis`` with probabilities ``softmax(logits)`` over it.

    The result has ``logits``' other axes, or ``shape`` if given (which must contain them:
    extra axes draw independent samples).

    >>> import jax, jax.numpy as jnp, namax as nx
    >>> B, V = nx.make_axes(batch=2, vocab=5)
    >>> logits = nx.named(jnp.zeros((2, 5)), (B, V))
    >>> nx.random.categorical(jax.random.key(0), logits, "vocab").axes
    (Axis('batch', 2),)
    """
    if not isinstance(logits, NamedArray):
        raise TypeError(f"categorical: logits must be a NamedArray, got {type(logits).__name__}")
    i = logits.axis_index(axis)
    sampled = logits.axes[i]
    others = logits.axes[:i] + logits.axes[i + 1 :]
    if shape is None:
        axes = others
    else:
        axes = _shape(shape, "categorical")
        if sampled.name in {a.name for a in axes}:
            raise ValueError(f"categorical: shape {_axes_str(axes)} contains the sampled axis {sampled.name!r}")
        missing = [a.name for a in others if a.name not in {b.name for b in axes}]
        if missing:
            raise ValueError(
                f"categorical: shape {_axes_str(axes)} lacks the logits' axes {missing}; "
                "the samples' shape must contain every non-sampled axis of logits"
            )
        merge_axes(others, axes, what="logits and shape")
    raw = align(logits, axes + (sampled,))
    return wrap(jax.random.categorical(key, raw, axis=-1, shape=_sizes(axes)), axes)


def permutation(key: jax.Array, x: Axis | NamedArray, axis: Optional[AxisSelector] = None,
                independent: bool = False) -> NamedArray:
    """A random permutation: of ``0..n-1`` along an Axis, or of a NamedArray along ``axis``.

    ``independent=True`` permutes each slice along ``axis`` separately.

    >>> import jax, namax as nx
    >>> sorted(nx.random.permutation(jax.random.key(0), nx.Axis("x", 4)).array.tolist())
    [0, 1, 2, 3]
    """
    if isinstance(x, Axis):
        if axis is not None:
            raise TypeError("permutation: axis= is only for permuting a NamedArray")
        return wrap(jax.random.permutation(key, x.size), (x,))
    if not isinstance(x, NamedArray):
        raise TypeError(f"permutation: expected an Axis or a NamedArray, got {type(x).__name__}")
    if axis is None:
        raise TypeError(f"permutation: name the axis to permute among {_axes_str(x.axes)}")
    i = x.axis_index(axis)
    return wrap(jax.random.permutation(key, x.array, axis=i, independent=independent), x.axes)


def choice(
    key: jax.Array,
    shape: AxisSpec,
    a: NamedArray,
    axis: AxisSelector,
    replace: bool = True,
    p: Optional[NamedArray] = None,
) -> NamedArray:
    """Entries of ``a`` drawn along ``axis``; ``axis`` is replaced by ``shape``'s axes, in place.

    ``p`` (optional) is a NamedArray of probabilities with the single axis ``axis``.

    >>> import jax, namax as nx
    >>> V, S = nx.Axis("vocab", 5), nx.Axis("sample", 3)
    >>> nx.random.choice(jax.random.key(0), S, nx.arange(V), "vocab", replace=False).axes
    (Axis('sample', 3),)
    """
    if not isinstance(a, NamedArray):
        raise TypeError(f"choice: a must be a NamedArray, got {type(a).__name__}")
    axes = _shape(shape, "choice")
    i = a.axis_index(axis)
    chosen = a.axes[i]
    out_axes = a.axes[:i] + axes + a.axes[i + 1 :]
    names = [x.name for x in out_axes]
    if len(set(names)) != len(names):
        raise ValueError(f"choice: shape {_axes_str(axes)} reuses an axis name of a {_axes_str(a.axes)}")
    raw_p = None
    if p is not None:
        if not isinstance(p, NamedArray) or p.axis_names != (chosen.name,):
            raise ValueError(f"choice: p must be a NamedArray with the single axis {chosen.name!r}, got {p!r}")
        raw_p = p.array
    return wrap(jax.random.choice(key, a.array, _sizes(axes), replace=replace, p=raw_p, axis=i), out_axes)


__all__ = [
    "normal", "uniform", "bernoulli", "randint", "truncated_normal", "gumbel", "categorical", "permutation",
    "choice",
]
