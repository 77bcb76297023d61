"""``Linear``: a named affine map from the ``In`` axes to the ``Out`` axes."""

from __future__ import annotations

import math
from typing import Any, Optional

import equinox as eqx
import jax
import jax.numpy as jnp

from .. import random as nxrandom
from ..axis import Axis, AxisSpec, ensure_tuple
from ..layout import weight_axes
from ..named import NamedArray, _axes_str
from ..ops.creation import zeros
from ..ops.dot import dot
from . import mup
from .mup import AbstractLinearReparam, LinearStandardParam, ReparamEnabled


def _axis_tuple(spec: AxisSpec, arg: str, what: str) -> tuple[Axis, ...]:
    axes = ensure_tuple(spec)
    if not axes:
        raise ValueError(f"{what}: {arg} is empty; give an Axis or a tuple of Axes")
    for a in axes:
        if not isinstance(a, Axis):
            raise TypeError(f"{what}: {arg} must be an Axis or a tuple of Axes (with sizes), got {a!r}")
    return axes


class Linear(eqx.Module, ReparamEnabled):
    """``y = x . weight + bias``, contracting the ``In`` axes of ``x``.

    ``In`` and ``Out`` are each an Axis or a tuple of Axes. ``weight`` has the axes
    ``Out + In`` or ``In + Out``: by default the order the backend multiplies fastest
    (``namax.layout``; ``Out + In`` on CPU), whatever order the user names them in. The
    named view is the same either way; ``bias`` has the axes ``Out``. Any other axes of ``x`` (batch, position, ...) pass through: the result has
    them, in ``x``'s order, followed by ``Out``.

    >>> import jax, namax as nx
    >>> Batch, Embed, Head, Key = nx.make_axes(batch=2, embed=8, head=2, key=4)
    >>> proj = Linear.init(In=Embed, Out=(Head, Key), key=jax.random.key(0))
    >>> proj(nx.ones((Batch, Embed))).axes
    (Axis('batch', 2), Axis('head', 2), Axis('key', 4))

    ``reparam_cls`` (a :mod:`namax.nn.mup` class, default ``LinearStandardParam``) sets the
    init scale and the forward multiplier on the weight (``layer.reparam.active_scale``).
    """

    weight: NamedArray
    bias: Optional[NamedArray]
    In: AxisSpec = eqx.field(static=True)
    Out: AxisSpec = eqx.field(static=True)
    _reparam_cls: type = eqx.field(static=True, default=LinearStandardParam)

    @property
    def reparam(self) -> AbstractLinearReparam:
        """The layer's parameterisation (``reparam_cls``) bound to its ``In`` and ``Out``.

        >>> import jax, namax as nx
        >>> from namax.nn.mup import OutputLinearMup
        >>> In, Out = nx.make_axes(embed=8, out=2)
        >>> Linear.init(In, Out, key=jax.random.key(0), reparam_cls=OutputLinearMup).reparam.active_scale
        0.125
        """
        return self._reparam_cls(self.In, self.Out)

    @staticmethod
    def input_reparam(use_mup: bool = True) -> type:
        """``InputLinearMup`` (or ``LinearStandardParam`` when ``use_mup`` is False).

        >>> Linear.input_reparam().__name__, Linear.input_reparam(False).__name__
        ('InputLinearMup', 'LinearStandardParam')
        """
        return mup.InputLinearMup if use_mup else mup.LinearStandardParam

    @staticmethod
    def hidden_reparam(use_mup: bool = True) -> type:
        """``HiddenLinearMup`` (or ``LinearStandardParam`` when ``use_mup`` is False).

        >>> Linear.hidden_reparam().__name__
        'HiddenLinearMup'
        """
        return mup.HiddenLinearMup if use_mup else mup.LinearStandardParam

    @staticmethod
    def output_reparam(use_mup: bool = True) -> type:
        """``OutputLinearMup`` (or ``LinearStandardParam`` when ``use_mup`` is False).

        >>> Linear.output_reparam().__name__
        'OutputLinearMup'
        """
        return mup.OutputLinearMup if use_mup else mup.LinearStandardParam

    @staticmethod
    def init(
        In: AxisSpec,
        Out: AxisSpec,
        *,
        key: jax.Array,
        use_bias: bool = True,
        out_first: Optional[bool] = None,
        init_scale: float = 1.0,
        dtype: Any = jnp.float32,
        reparam_cls: type = LinearStandardParam,
    ) -> "Linear":
        """A Linear layer with a truncated-normal weight and a zero bias.

        The weight is drawn from a normal truncated to ``[-3, 3]`` and scaled by
        ``init_scale / sqrt(size of In)`` (so outputs have about unit variance for
        unit-variance inputs at ``init_scale=1``). ``out_first`` chooses the weight's stored
        axis order: ``Out + In`` (True), ``In + Out`` (False), or the default backend's
        fastest (None, see ``namax.layout.LAYOUTS``). ``reparam_cls`` (an
        ``AbstractLinearReparam`` subclass) replaces ``1/sqrt(size of In)`` by its
        ``init_scale(In, Out)`` and its ``active_scale`` multiplies the weight in the
        forward pass.
        """
        if not (isinstance(reparam_cls, type) and issubclass(reparam_cls, AbstractLinearReparam)):
            raise TypeError(f"Linear.init: reparam_cls must be an AbstractLinearReparam subclass "
                            f"(e.g. namax.nn.mup.HiddenLinearMup), got {reparam_cls!r}")
        ins = _axis_tuple(In, "In", "Linear.init")
        outs = _axis_tuple(Out, "Out", "Linear.init")
        shared = {a.name for a in ins} & {a.name for a in outs}
        if shared:
            raise ValueError(
                f"Linear.init: In {_axes_str(ins)} and Out {_axes_str(outs)} share the axis names "
                f"{sorted(shared)}; give the output axes other names (e.g. Axis.alias)"
            )
        fan_in = math.prod(a.size for a in ins)
        stored = weight_axes(ins, outs, out_first=out_first)
        weight = nxrandom.truncated_normal(key, stored, -3.0, 3.0, dtype=dtype)
        if reparam_cls is LinearStandardParam:  # the default: exactly the historical init
            weight = weight * (init_scale / math.sqrt(max(fan_in, 1)))
        else:
            weight = weight * (init_scale * reparam_cls.init_scale(In, Out))
        bias = zeros(outs, dtype=dtype) if use_bias else None
        return Linear(weight, bias, In, Out, reparam_cls)

    def __call__(self, x: NamedArray) -> NamedArray:
        """Contract ``x``'s ``In`` axes with the weight and add the bias."""
        if not isinstance(x, NamedArray):
            raise TypeError(f"Linear: the input must be a NamedArray, got {type(x).__name__}")
        ins = ensure_tuple(self.In)
        missing = [a.name for a in ins if not x.has_axis(a.name)]
        if missing:
            raise ValueError(
                f"Linear: the input with axes {_axes_str(x.axes)} lacks the In axes {missing} "
                f"(In={_axes_str(ins)})"
            )
        for a in ins:
            if x.axis_size(a.name) != a.size:
                raise ValueError(
                    f"Linear: the input's axis {a.name!r} has size {x.axis_size(a.name)} but the layer's In axis "
                    f"has size {a.size} (input axes {_axes_str(x.axes)})"
                )
        clashing = [a.name for a in ensure_tuple(self.Out) if x.has_axis(a.name)]
        if clashing:
            raise ValueError(
                f"Linear: the input with axes {_axes_str(x.axes)} already has the Out axes {clashing}"
            )
        scale = self.reparam.active_scale
        weight = self.weight if scale == 1 else self.weight * scale
        out = dot(x, weight, axis=ins)
        if self.bias is not None:
            out = out + self.bias
        return out


__all__ = ["Linear"]
