"""Random NamedArrays: ``jax.random`` with axes for shapes (``namax.random.normal(key, (B, E))``).

With scalar parameters each function draws exactly what its ``jax.random`` namesake draws
for the positional shape ``tuple(a.size for a in shape)``. Parameters may also be
NamedArrays; they broadcast against ``shape`` by name (their axes must be among it).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from .axis import Axis, AxisSelector, AxisSpec, ensure_tuple, merge_axes
from .named import NamedArray, _axes_str, align, wrap
from .signature import table_function


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


_REQUIRED = inspect.Parameter.empty


@dataclasses.dataclass(frozen=True)
class _Distribution:
    """One row of the table: a ``jax.random`` sampler whose draws get the axes of ``shape``."""

    name: str
    summary: str
    params: tuple[tuple[str, Any], ...]  # after ``key, shape``, in Haliax's order; "dtype" is not broadcast
    example: str  # the arguments after ``key, shape`` in the docstring's example


_DISTRIBUTIONS = (
    _Distribution("normal", "Standard normal samples.", (("dtype", float),), ""),
    _Distribution("uniform", "Uniform samples in ``[minval, maxval)``.",
                  (("dtype", float), ("minval", 0.0), ("maxval", 1.0)), ", minval=-1.0"),
    _Distribution("bernoulli", "Booleans that are True with probability ``p``.", (("p", 0.5),), ", p=0.25"),
    _Distribution("randint", "Integers in ``[minval, maxval)``.",
                  (("minval", _REQUIRED), ("maxval", _REQUIRED), ("dtype", int)), ", 0, 10"),
    _Distribution("truncated_normal", "Normal samples truncated to ``(lower, upper)``.",
                  (("lower", _REQUIRED), ("upper", _REQUIRED), ("dtype", float)), ", -1.0, 1.0"),
    _Distribution("gumbel", "Standard Gumbel samples.", (("dtype", float),), ""),
    _Distribution("poisson", "Poisson counts with rate ``lam``.", (("lam", _REQUIRED), ("dtype", int)), ", 3.0"),
    _Distribution("exponential", "Standard exponential samples.", (("dtype", float),), ""),
    _Distribution("gamma", "Gamma samples with concentration ``a`` (unit scale).",
                  (("a", _REQUIRED), ("dtype", float)), ", 2.0"),
    _Distribution("beta", "Beta samples with concentrations ``a`` and ``b``.",
                  (("a", _REQUIRED), ("b", _REQUIRED), ("dtype", float)), ", 2.0, 3.0"),
    _Distribution("laplace", "Standard Laplace samples.", (("dtype", float),), ""),
    _Distribution("cauchy", "Standard Cauchy samples.", (("dtype", float),), ""),
    _Distribution("logistic", "Standard logistic samples.", (("dtype", float),), ""),
    _Distribution("rademacher", "Random signs, -1 or +1 with equal probability.", (("dtype", float),), ""),
    _Distribution("t", "Student's t samples with ``df`` degrees of freedom.", (("df", _REQUIRED), ("dtype", float)),
                  ", 5.0"),
    _Distribution("pareto", "Pareto samples with shape ``b``.", (("b", _REQUIRED), ("dtype", float)), ", 3.0"),
    _Distribution("loggamma", "Logs of Gamma samples with concentration ``a``, accurate for small ``a``.",
                  (("a", _REQUIRED), ("dtype", float)), ", 0.5"),
    _Distribution("weibull_min", "Weibull samples with ``scale`` and ``concentration``.",
                  (("scale", _REQUIRED), ("concentration", _REQUIRED), ("dtype", float)), ", 1.0, 2.0"),
)


def _sample(dist: _Distribution, key: jax.Array, shape: AxisSpec, args: dict[str, Any]) -> NamedArray:
    axes = _shape(shape, dist.name)
    kwargs = {p: (v if p == "dtype" else _param(v, axes, p, dist.name)) for p, v in args.items()}
    return wrap(getattr(jax.random, dist.name)(key, shape=_sizes(axes), **kwargs), axes)


def _make_sampler(dist: _Distribution) -> Callable[..., NamedArray]:
    def draw(given: dict[str, Any]) -> NamedArray:
        return _sample(dist, given.pop("key"), given.pop("shape"), given)

    sampler = table_function(dist.name, ("key", "shape"), dist.params, draw, __name__)

    broadcast = [p for p, _ in dist.params if p != "dtype"]
    note = (
        f" {', '.join(f'``{p}``' for p in broadcast)} may be scalars or NamedArrays whose axes are among ``shape``"
        " (broadcast by name)." if broadcast else ""
    )
    sampler.__doc__ = (
        f"{dist.summary} The result has the axes of ``shape``.\n\n"
        f"Draws exactly what ``jax.random.{dist.name}`` draws for the positional shape.{note}\n\n"
        f">>> import jax, namax as nx\n"
        f">>> nx.random.{dist.name}(jax.random.key(0), (nx.Axis('batch', 2), nx.Axis('x', 3)){dist.example}).axes\n"
        f"(Axis('batch', 2), Axis('x', 3))\n"
    )
    return sampler


_g = globals()
for _dist in _DISTRIBUTIONS:
    _g[_dist.name] = _make_sampler(_dist)
del _g, _dist

DISTRIBUTION_NAMES = tuple(d.name for d in _DISTRIBUTIONS)


def ball(key: jax.Array, shape: AxisSpec, D: Axis, p: float = 2.0, dtype: Any = float) -> NamedArray:
    """Points uniform in the unit ``p``-norm ball of dimension ``D.size``; axes ``shape + (D,)``.

    >>> import jax, jax.numpy as jnp, namax as nx
    >>> pts = nx.random.ball(jax.random.key(0), nx.Axis("point", 4), nx.Axis("dim", 3))
    >>> pts.axes, bool((jnp.linalg.norm(pts.array, axis=-1) <= 1).all())
    ((Axis('point', 4), Axis('dim', 3)), True)
    """
    axes = _shape(shape, "ball")
    if not isinstance(D, Axis):
        raise TypeError(f"ball: D must be an Axis (the dimension of the ball, with its size), got {D!r}")
    if D.name in {a.name for a in axes}:
        raise ValueError(f"ball: the ball's axis {D.name!r} is already in shape {_axes_str(axes)}")
    return wrap(jax.random.ball(key, D.size, p, _sizes(axes), dtype), axes + (D,))


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


__all__ = [*DISTRIBUTION_NAMES, "ball", "categorical", "permutation", "choice"]
