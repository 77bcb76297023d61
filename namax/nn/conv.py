"""``Conv``: convolution over named spatial axes, via ``jax.lax.conv_general_dilated``."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import equinox as eqx
import jax
import jax.numpy as jnp

from .. import random as nxrandom
from ..axis import Axis, AxisSelection, axis_names
from ..named import NamedArray, _axes_str, wrap
from ..ops.creation import zeros

Padding = Union[str, int, Sequence[tuple[int, int]]]


def _per_axis(value: Union[int, Sequence[int]], n: int, arg: str, what: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(value)
    if len(value) != n or not all(isinstance(v, int) and v >= 1 for v in value):
        raise ValueError(f"{what}: {arg} must be a positive int or {n} positive ints (one per spatial axis), got {value!r}")
    return value


def _padding(padding: Padding, n: int, what: str) -> Union[str, tuple[tuple[int, int], ...]]:
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID", "SAME_LOWER"):
            raise ValueError(f"{what}: padding must be 'SAME', 'VALID', 'SAME_LOWER', an int or (lo, hi) pairs, got {padding!r}")
        return padding.upper()
    if isinstance(padding, int):
        return ((padding, padding),) * n
    pairs = tuple(tuple(p) for p in padding)
    if len(pairs) != n or not all(len(p) == 2 for p in pairs):
        raise ValueError(f"{what}: padding needs {n} (lo, hi) pairs, one per spatial axis, got {padding!r}")
    return pairs


class Conv(eqx.Module):
    """A convolution over the named ``Spatial`` axes from channel axis ``In`` to ``Out``.

    ``weight`` has axes ``(Out, In, kernel_<s> for each spatial axis s)``; ``bias`` has
    ``Out``. The input needs ``In`` and every spatial axis (any sizes); all its other axes
    are batch axes. The result has the batch axes (in the input's order), then ``Out``, then
    the spatial axes with their new sizes.

    >>> import jax, namax as nx
    >>> Batch, H, W, C, D = nx.make_axes(batch=2, height=6, width=5, channels=3, features=4)
    >>> conv = Conv.init((H, W), C, D, kernel_size=3, key=jax.random.key(0))
    >>> conv(nx.ones((Batch, C, H, W))).axes
    (Axis('batch', 2), Axis('features', 4), Axis('height', 6), Axis('width', 5))
    """

    weight: NamedArray
    bias: Optional[NamedArray]
    Spatial: tuple[str, ...] = eqx.field(static=True)
    In: Axis = eqx.field(static=True)
    Out: Axis = eqx.field(static=True)
    stride: tuple[int, ...] = eqx.field(static=True)
    padding: Any = eqx.field(static=True)
    dilation: tuple[int, ...] = eqx.field(static=True)

    @staticmethod
    def init(
        Spatial: AxisSelection,
        In: Axis,
        Out: Axis,
        kernel_size: Union[int, Sequence[int]],
        *,
        key: jax.Array,
        stride: Union[int, Sequence[int]] = 1,
        padding: Padding = "SAME",
        dilation: Union[int, Sequence[int]] = 1,
        use_bias: bool = True,
        dtype: Any = jnp.float32,
    ) -> "Conv":
        """Truncated-normal weight scaled by ``1/sqrt(In.size * kernel volume)``, zero bias."""
        spatial = axis_names(Spatial)
        n = len(spatial)
        if n == 0:
            raise ValueError("Conv.init: give at least one spatial axis")
        for arg, ax in (("In", In), ("Out", Out)):
            if not isinstance(ax, Axis):
                raise TypeError(f"Conv.init: {arg} must be an Axis (with a size), got {ax!r}")
        if In.name == Out.name or In.name in spatial or Out.name in spatial:
            raise ValueError(f"Conv.init: In {In}, Out {Out} and Spatial {spatial} need distinct names")
        kernel = _per_axis(kernel_size, n, "kernel_size", "Conv.init")
        kernel_axes = tuple(Axis(f"kernel_{s}", k) for s, k in zip(spatial, kernel))
        fan_in = In.size * math.prod(kernel)
        weight = nxrandom.truncated_normal(key, (Out, In, *kernel_axes), -3.0, 3.0, dtype=dtype)
        weight = weight * (1.0 / math.sqrt(fan_in))
        bias = zeros(Out, dtype=dtype) if use_bias else None
        return Conv(weight, bias, spatial, In, Out, _per_axis(stride, n, "stride", "Conv.init"),
                    _padding(padding, n, "Conv.init"), _per_axis(dilation, n, "dilation", "Conv.init"))

    def __call__(self, x: NamedArray) -> NamedArray:
        if not isinstance(x, NamedArray):
            raise TypeError(f"Conv: the input must be a NamedArray, got {type(x).__name__}")
        missing = [n for n in (self.In.name, *self.Spatial) if not x.has_axis(n)]
        if missing:
            raise ValueError(f"Conv: the input {_axes_str(x.axes)} lacks the axes {missing}")
        x.axis_index(self.In)  # size check
        own = {self.In.name, *self.Spatial}
        batch = tuple(a for a in x.axes if a.name not in own)
        if self.Out.name in {a.name for a in batch}:
            raise ValueError(f"Conv: the input {_axes_str(x.axes)} already has the Out axis {self.Out.name!r}")
        raw = x.rearrange((*(a.name for a in batch), self.In.name, *self.Spatial)).array
        flat = raw.reshape((math.prod(a.size for a in batch), *raw.shape[len(batch):]))
        kernel = self.weight.rearrange((self.Out.name, self.In.name, *(f"kernel_{s}" for s in self.Spatial))).array
        out = jax.lax.conv_general_dilated(
            flat, kernel, window_strides=self.stride, padding=self.padding, rhs_dilation=self.dilation
        )
        spatial_axes = tuple(Axis(s, size) for s, size in zip(self.Spatial, out.shape[2:]))
        out_axes = batch + (self.Out,) + spatial_axes
        y = wrap(out.reshape(tuple(a.size for a in out_axes)), out_axes)
        if self.bias is not None:
            y = y + self.bias
        return y


__all__ = ["Conv"]
