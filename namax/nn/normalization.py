"""Normalisation over named axes: softmax, log_softmax, logsumexp, standardize, and the
:class:`LayerNorm` and :class:`RMSNorm` modules.

Every function takes one axis or several (``softmax(scores, (KPos, Head))`` normalises
over both at once); the result keeps the input's axes (``logsumexp`` drops them).

>>> import namax as nx
>>> KPos = nx.Axis("key_position", 4)
>>> softmax(nx.zeros(KPos), KPos).array.tolist()
[0.25, 0.25, 0.25, 0.25]
"""

from __future__ import annotations

from typing import Any, Optional

import equinox as eqx
import jax
import jax.numpy as jnp

from ..axis import Axis, AxisSelection, AxisSpec, ensure_tuple
from ..named import NamedArray
from ..ops.creation import ones, zeros
from ..ops import elementwise as ew, reductions as red


def _check(x: Any, axis: AxisSelection, what: str) -> None:
    if not isinstance(x, NamedArray):
        raise TypeError(f"{what}: expected a NamedArray, got {type(x).__name__}")
    if axis is None:
        raise TypeError(f"{what}: an axis (or a tuple of axes) is required")
    for a in ensure_tuple(axis):
        x.axis_index(a)  # raises naming the axis and the array's axes


def _shifted(x: NamedArray, axis: AxisSelection) -> NamedArray:
    """``x`` minus its (gradient-stopped) maximum over ``axis``; infinite maxima count as 0."""
    peak = jax.lax.stop_gradient(red.max(x, axis))
    peak = ew.where(ew.isfinite(peak), peak, 0)
    return x - peak


def softmax(x: NamedArray, axis: AxisSelection) -> NamedArray:
    """``exp(x) / sum(exp(x), axis)``, numerically stable; ``axis`` may be several axes.

    >>> import namax as nx
    >>> Q, K = nx.Axis("position", 2), nx.Axis("key_position", 2)
    >>> softmax(nx.zeros((Q, K)), K).array.tolist()
    [[0.5, 0.5], [0.5, 0.5]]
    """
    _check(x, axis, "softmax")
    unnormalized = ew.exp(_shifted(x, axis))
    return unnormalized / red.sum(unnormalized, axis)


def log_softmax(x: NamedArray, axis: AxisSelection) -> NamedArray:
    """``x - logsumexp(x, axis)``, numerically stable; ``axis`` may be several axes.

    >>> import namax as nx
    >>> K = nx.Axis("key_position", 2)
    >>> round(float(log_softmax(nx.zeros(K), K).array[0]), 4)
    -0.6931
    """
    _check(x, axis, "log_softmax")
    shifted = _shifted(x, axis)
    return shifted - ew.log(red.sum(ew.exp(shifted), axis))


def logsumexp(x: NamedArray, axis: AxisSelection) -> NamedArray:
    """``log(sum(exp(x), axis))``, numerically stable; the result lacks ``axis``.

    >>> import namax as nx
    >>> B, K = nx.Axis("batch", 3), nx.Axis("key_position", 2)
    >>> logsumexp(nx.zeros((B, K)), K).axes
    (Axis('batch', 3),)
    """
    _check(x, axis, "logsumexp")
    return red.logsumexp(x, axis)


def standardize(
    x: NamedArray,
    axis: AxisSelection,
    *,
    mean: Optional[NamedArray] = None,
    variance: Optional[NamedArray] = None,
    eps: float = 1e-5,
) -> NamedArray:
    """``(x - mean) / sqrt(variance + eps)`` with mean and variance over ``axis`` unless given.

    >>> import namax as nx
    >>> E = nx.Axis("embed", 2)
    >>> standardize(nx.named(jnp.array([1.0, 3.0]), E), E, eps=0.0).array.tolist()
    [-1.0, 1.0]
    """
    _check(x, axis, "standardize")
    if mean is None:
        mean = red.mean(x, axis)
    if variance is None:
        variance = red.mean(ew.square(x - mean), axis)
    return (x - mean) * ew.reciprocal(ew.sqrt(variance + eps))


class LayerNorm(eqx.Module):
    """Layer normalisation over ``axis``: standardise, then scale by ``weight`` and shift by ``bias``.

    ``weight`` (ones) and ``bias`` (zeros) have exactly the axes of ``axis``; either can be
    turned off.

    >>> import jax, namax as nx
    >>> Embed = nx.Axis("embed", 4)
    >>> ln = LayerNorm.init(Embed)
    >>> ln(nx.random.normal(jax.random.key(0), (nx.Axis("batch", 2), Embed))).axes
    (Axis('batch', 2), Axis('embed', 4))
    """

    weight: Optional[NamedArray]
    bias: Optional[NamedArray]
    axis: AxisSpec = eqx.field(static=True)
    eps: float = eqx.field(static=True, default=1e-5)

    @staticmethod
    def init(axis: AxisSpec, *, eps: float = 1e-5, use_weight: bool = True, use_bias: bool = True,
             dtype: Any = jnp.float32) -> "LayerNorm":
        """A LayerNorm over ``axis`` (an Axis or a tuple of Axes, with sizes)."""
        return LayerNorm(*_scale_and_shift(axis, "LayerNorm", use_weight, use_bias, dtype), axis, eps)

    def __call__(self, x: NamedArray) -> NamedArray:
        out = standardize(x, self.axis, eps=self.eps)
        return _apply_scale_and_shift(out, self.weight, self.bias)


class RMSNorm(eqx.Module):
    """Root-mean-square normalisation over ``axis``: ``x / sqrt(mean(x**2) + eps) * weight``.

    ``weight`` is ones over ``axis``; a zero ``bias`` can be added with ``use_bias=True``.

    >>> import jax, namax as nx
    >>> Embed = nx.Axis("embed", 4)
    >>> RMSNorm.init(Embed)(nx.ones(Embed)).array.round(3).tolist()
    [1.0, 1.0, 1.0, 1.0]
    """

    weight: Optional[NamedArray]
    bias: Optional[NamedArray]
    axis: AxisSpec = eqx.field(static=True)
    eps: float = eqx.field(static=True, default=1e-6)

    @staticmethod
    def init(axis: AxisSpec, *, eps: float = 1e-6, use_weight: bool = True, use_bias: bool = False,
             dtype: Any = jnp.float32) -> "RMSNorm":
        """An RMSNorm over ``axis`` (an Axis or a tuple of Axes, with sizes)."""
        return RMSNorm(*_scale_and_shift(axis, "RMSNorm", use_weight, use_bias, dtype), axis, eps)

    def __call__(self, x: NamedArray) -> NamedArray:
        _check(x, self.axis, "RMSNorm")
        return _apply_scale_and_shift(_rms_normalized(x, self.axis, self.eps), self.weight, self.bias)


def _rms_normalized(x: NamedArray, axis: AxisSelection, eps: float) -> NamedArray:
    """``x / sqrt(mean(x**2, axis) + eps)``."""
    mean_square = red.mean(ew.square(x), axis)
    return x * ew.reciprocal(ew.sqrt(mean_square + eps))


class RmsNorm(RMSNorm):
    """Haliax's RMS norm: an :class:`RMSNorm` with Haliax's constructor, defaults and dtypes.

    ``RmsNorm(axis, weight, bias, eps=1e-5, dtype=None)``; ``init`` has a bias by default
    and ``eps=1e-5``. The statistics are computed in ``dtype`` (None: the default float
    type, float32), the normalised values are cast back to the input's dtype, then scaled
    and shifted in that dtype.

    >>> import jax.numpy as jnp, namax as nx
    >>> Embed = nx.Axis("embed", 2)
    >>> norm = RmsNorm.init(Embed)
    >>> norm.eps, norm.bias.array.tolist(), isinstance(norm, RMSNorm)
    (1e-05, [0.0, 0.0], True)
    >>> norm(nx.named(jnp.array([3.0, -3.0], dtype=jnp.bfloat16), Embed)).array.tolist()
    [1.0, -1.0]
    """

    dtype: Any = eqx.field(static=True, default=None)

    def __init__(self, axis: AxisSpec, weight: Optional[NamedArray], bias: Optional[NamedArray], eps: float = 1e-5,
                 dtype: Any = None):
        self.axis = axis
        self.weight = weight
        self.bias = bias
        self.eps = eps
        self.dtype = dtype

    @classmethod
    def init(cls, axis: AxisSpec, eps: float = 1e-5, *, use_weight: bool = True, use_bias: bool = True,
             dtype: Any = None) -> "RmsNorm":
        """An RmsNorm over ``axis``: weight ones and bias zeros (float32) over ``axis``;
        ``dtype`` is the dtype the statistics are computed in."""
        return cls(axis, *_scale_and_shift(axis, "RmsNorm", use_weight, use_bias, jnp.float32), eps, dtype)

    def __call__(self, x: NamedArray) -> NamedArray:
        _check(x, self.axis, "RmsNorm")
        compute = self.dtype if self.dtype is not None else jnp.result_type(float)
        out = _rms_normalized(x.astype(compute), self.axis, self.eps).astype(x.dtype)
        weight = None if self.weight is None else self.weight.astype(out.dtype)
        bias = None if self.bias is None else self.bias.astype(out.dtype)
        return _apply_scale_and_shift(out, weight, bias)


def _apply_scale_and_shift(out: NamedArray, weight: Optional[NamedArray], bias: Optional[NamedArray]) -> NamedArray:
    """``out * weight + bias``, skipping whichever is ``None``."""
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def _scale_and_shift(axis: AxisSpec, what: str, use_weight: bool, use_bias: bool, dtype: Any
                     ) -> tuple[Optional[NamedArray], Optional[NamedArray]]:
    """A norm's weight (ones) and bias (zeros) over ``axis``, each only if asked for."""
    axes = ensure_tuple(axis)
    for a in axes:
        if not isinstance(a, Axis):
            raise TypeError(f"{what}.init: axis must be an Axis or a tuple of Axes (with sizes), got {a!r}")
    return (ones(axes, dtype=dtype) if use_weight else None), (zeros(axes, dtype=dtype) if use_bias else None)


__all__ = ["softmax", "log_softmax", "logsumexp", "standardize", "LayerNorm", "RMSNorm", "RmsNorm"]
