"""``Conv`` and ``ConvTranspose``: (transposed) convolution over named spatial axes, via
``jax.lax.conv_general_dilated``."""

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


def _per_axis_nonneg(value: Union[int, Sequence[int]], n: int, arg: str, what: str) -> tuple[int, ...]:
    values = (value,) * n if isinstance(value, int) else tuple(value)
    if len(values) != n or not all(isinstance(v, int) and v >= 0 for v in values):
        raise ValueError(f"{what}: {arg} must be a non-negative int or {n} of them (one per spatial axis), got {value!r}")
    return values


def _transpose_padding(padding: Any, n: int, what: str) -> tuple[tuple[int, int], ...]:
    """An int, one int per spatial axis, or one ``(lo, hi)`` pair per spatial axis."""
    if isinstance(padding, int):
        padding = (padding,) * n
    if isinstance(padding, str) or not isinstance(padding, Sequence) or len(padding) != n:
        raise ValueError(f"{what}: padding must be an int, {n} ints or {n} (lo, hi) pairs (one per spatial "
                         f"axis), got {padding!r}")
    pairs = tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)
    if not all(len(p) == 2 and all(isinstance(v, int) and v >= 0 for v in p) for p in pairs):
        raise ValueError(f"{what}: padding must be non-negative ints or (lo, hi) pairs, got {padding!r}")
    return pairs


class ConvTranspose(eqx.Module):
    """A transposed convolution over the named ``Spatial`` axes, from channels ``In`` to ``Out``.

    ``weight`` has axes ``(Out, In/groups, kernel_<s> for each spatial axis s)`` (the ``In``
    name, sized ``In.size // groups``); ``bias`` has ``Out``. The input needs ``In`` and
    every spatial axis; its other axes are batch axes. The result has the batch axes, then
    ``Out``, then the spatial axes, each of size
    ``(n - 1) * stride - (lo + hi) + dilation * (kernel - 1) + output_padding + 1``
    where ``(lo, hi)`` is that axis's ``padding``.

    The computation is Haliax's (and Equinox's): the input is dilated by ``stride``, padded
    by ``dilation * (kernel - 1) - lo`` before and ``dilation * (kernel - 1) - hi +
    output_padding`` after, and correlated with the (unflipped) kernel, i.e.
    ``jax.lax.conv_transpose(..., transpose_kernel=False)`` with that explicit padding.

    >>> import jax, namax as nx
    >>> Batch, H, C, D = nx.make_axes(batch=2, height=5, channels=3, features=4)
    >>> up = ConvTranspose.init(H, C, D, kernel_size=3, stride=2, key=jax.random.key(0))
    >>> up(nx.ones((Batch, C, H))).axes
    (Axis('batch', 2), Axis('features', 4), Axis('height', 11))
    """

    weight: NamedArray
    bias: Optional[NamedArray]
    Spatial: tuple[str, ...] = eqx.field(static=True)
    In: Axis = eqx.field(static=True)
    Out: Axis = eqx.field(static=True)
    kernel_size: tuple[int, ...] = eqx.field(static=True)
    stride: tuple[int, ...] = eqx.field(static=True)
    padding: tuple[tuple[int, int], ...] = eqx.field(static=True)
    output_padding: tuple[int, ...] = eqx.field(static=True)
    dilation: tuple[int, ...] = eqx.field(static=True)
    groups: int = eqx.field(static=True)

    @staticmethod
    def init(
        Spatial: AxisSelection,
        In: Axis,
        Out: Axis,
        kernel_size: Union[int, Sequence[int]],
        *,
        stride: Union[int, Sequence[int]] = 1,
        padding: Union[int, Sequence[int], Sequence[tuple[int, int]]] = 0,
        output_padding: Union[int, Sequence[int]] = 0,
        dilation: Union[int, Sequence[int]] = 1,
        groups: int = 1,
        use_bias: bool = True,
        key: jax.Array,
        dtype: Any = jnp.float32,
    ) -> "ConvTranspose":
        """Weight and bias uniform in ``+-1/sqrt(In.size / groups * kernel volume)`` (Haliax's init).

        ``output_padding`` (per axis, less than ``stride`` or ``dilation``) picks among the
        output sizes that a strided convolution maps to the same input size.

        >>> import jax, namax as nx
        >>> H, C, D = nx.make_axes(height=4, channels=4, features=2)
        >>> ConvTranspose.init(H, C, D, kernel_size=3, groups=2, key=jax.random.key(0)).weight.axes
        (Axis('features', 2), Axis('channels', 2), Axis('kernel_height', 3))
        """
        what = "ConvTranspose.init"
        spatial = axis_names(Spatial)
        n = len(spatial)
        if n == 0:
            raise ValueError(f"{what}: give at least one spatial axis")
        for arg, ax in (("In", In), ("Out", Out)):
            if not isinstance(ax, Axis):
                raise TypeError(f"{what}: {arg} must be an Axis (with a size), got {ax!r}")
        if In.name == Out.name or In.name in spatial or Out.name in spatial or len(set(spatial)) != n:
            raise ValueError(f"{what}: In {In}, Out {Out} and Spatial {spatial} need distinct names")
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"{what}: groups must be a positive int, got {groups!r}")
        for arg, ax in (("In", In), ("Out", Out)):
            if ax.size % groups:
                raise ValueError(f"{what}: {arg} {ax.name!r} of size {ax.size} is not divisible by groups={groups}")
        kernel = _per_axis(kernel_size, n, "kernel_size", what)
        stride_t = _per_axis(stride, n, "stride", what)
        dilation_t = _per_axis(dilation, n, "dilation", what)
        out_pad = _per_axis_nonneg(output_padding, n, "output_padding", what)
        for s, o, st, d in zip(spatial, out_pad, stride_t, dilation_t):
            if o >= max(st, d):
                raise ValueError(f"{what}: output_padding {o} for spatial axis {s!r} must be smaller than its "
                                 f"stride {st} or dilation {d}")
        pad = _transpose_padding(padding, n, what)
        kernel_axes = tuple(Axis(f"kernel_{s}", k) for s, k in zip(spatial, kernel))
        in_group = In.resize(In.size // groups)
        lim = 1.0 / math.sqrt(in_group.size * math.prod(kernel))
        k_w, k_b = jax.random.split(key)
        weight = nxrandom.uniform(k_w, (Out, in_group, *kernel_axes), minval=-lim, maxval=lim, dtype=dtype)
        bias = nxrandom.uniform(k_b, Out, minval=-lim, maxval=lim, dtype=dtype) if use_bias else None
        return ConvTranspose(weight, bias, spatial, In, Out, kernel, stride_t, pad, out_pad, dilation_t, groups)

    def __call__(self, x: NamedArray, *, key: Optional[jax.Array] = None) -> NamedArray:
        """The transposed convolution of ``x``; ``key`` is unused (for the Haliax call signature).

        >>> import jax, namax as nx
        >>> H, C, D = nx.make_axes(height=4, channels=3, features=2)
        >>> up = ConvTranspose.init(H, C, D, kernel_size=2, stride=2, key=jax.random.key(0))
        >>> up(nx.ones((C, H))).axes
        (Axis('features', 2), Axis('height', 8))
        """
        del key
        what = "ConvTranspose"
        if not isinstance(x, NamedArray):
            raise TypeError(f"{what}: the input must be a NamedArray, got {type(x).__name__}")
        missing = [n for n in (self.In.name, *self.Spatial) if not x.has_axis(n)]
        if missing:
            raise ValueError(f"{what}: the input {_axes_str(x.axes)} lacks the axes {missing}")
        if x.axis_size(self.In.name) != self.In.size:
            raise ValueError(f"{what}: the input's {self.In.name!r} axis has size {x.axis_size(self.In.name)}, "
                             f"the layer's In has {self.In.size} (input {_axes_str(x.axes)})")
        own = {self.In.name, *self.Spatial}
        batch = tuple(a for a in x.axes if a.name not in own)
        if self.Out.name in {a.name for a in batch}:
            raise ValueError(f"{what}: the input {_axes_str(x.axes)} already has the Out axis {self.Out.name!r}")
        sizes = [x.axis_size(s) for s in self.Spatial]
        out_sizes = [(m - 1) * st - (lo + hi) + d * (k - 1) + o + 1 for m, st, (lo, hi), d, k, o in
                     zip(sizes, self.stride, self.padding, self.dilation, self.kernel_size, self.output_padding)]
        bad = [(s, m, o) for s, m, o in zip(self.Spatial, sizes, out_sizes) if o < 1]
        if bad:
            s, m, o = bad[0]
            raise ValueError(f"{what}: spatial axis {s!r} of size {m} would give an output of size {o} "
                             f"(padding {self.padding}, kernel {self.kernel_size}); reduce the padding")
        raw = x.rearrange((*(a.name for a in batch), self.In.name, *self.Spatial)).array
        flat = raw.reshape((math.prod(a.size for a in batch), *raw.shape[len(batch):]))
        kernel = self.weight.rearrange((self.Out.name, self.In.name, *(f"kernel_{s}" for s in self.Spatial))).array
        padding = tuple((d * (k - 1) - lo, d * (k - 1) - hi + o) for k, (lo, hi), o, d in
                        zip(self.kernel_size, self.padding, self.output_padding, self.dilation))
        out = jax.lax.conv_general_dilated(
            flat, kernel, window_strides=(1,) * len(self.Spatial), padding=padding, lhs_dilation=self.stride,
            rhs_dilation=self.dilation, feature_group_count=self.groups,
        )
        spatial_axes = tuple(Axis(s, size) for s, size in zip(self.Spatial, out.shape[2:]))
        out_axes = batch + (self.Out,) + spatial_axes
        y = wrap(out.reshape(tuple(a.size for a in out_axes)), out_axes)
        if self.bias is not None:
            y = y + self.bias
        return y


__all__ = ["Conv", "ConvTranspose"]
