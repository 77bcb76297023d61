"""Dropout with an explicit key, optionally sharing its mask along some axes."""

from __future__ import annotations

from typing import Optional

import equinox as eqx
import jax

from .. import random as nxrandom
from ..axis import AxisSelection, axis_names, ensure_tuple
from ..named import NamedArray, _axes_str
from ..ops.elementwise import where


def dropout(
    x: NamedArray,
    pdrop: float,
    *,
    key: Optional[jax.Array],
    broadcast_axes: Optional[AxisSelection] = None,
    inference: bool = False,
) -> NamedArray:
    """Zero each element with probability ``pdrop`` and scale the rest by ``1 / (1 - pdrop)``.

    The mask is drawn over ``x``'s axes except ``broadcast_axes`` (every slice along those
    shares one mask). ``inference=True`` or ``pdrop == 0`` returns ``x`` unchanged.

    >>> import jax, namax as nx
    >>> x = nx.ones(nx.Axis("embed", 4))
    >>> dropout(x, 0.5, key=jax.random.key(0), inference=True) is x
    True
    """
    if not 0.0 <= pdrop < 1.0 and not (pdrop == 1.0 and inference):
        raise ValueError(f"dropout: pdrop must be in [0, 1), got {pdrop}")
    if inference or pdrop == 0.0:
        return x
    if not isinstance(x, NamedArray):
        raise TypeError(f"dropout: expected a NamedArray, got {type(x).__name__}")
    if key is None:
        raise ValueError("dropout: a key is required when not in inference mode (pass key=..., or inference=True)")
    shared = axis_names(broadcast_axes) if broadcast_axes is not None else ()
    for name in shared:
        if not x.has_axis(name):
            raise ValueError(f"dropout: broadcast axis {name!r} is not an axis of the input {_axes_str(x.axes)}")
    mask_axes = tuple(a for a in x.axes if a.name not in shared)
    keep = nxrandom.bernoulli(key, mask_axes, 1.0 - pdrop)
    out = where(keep, x / (1.0 - pdrop), 0.0).astype(x.dtype)
    return out if out.axes == x.axes else out.rearrange(x.axis_names)


class Dropout(eqx.Module):
    """Dropout as a module: ``Dropout(0.1)(x, key=k)``; ``inference=True`` passes ``x`` through.

    >>> import jax, namax as nx
    >>> x = nx.ones((nx.Axis("batch", 2), nx.Axis("embed", 3)))
    >>> Dropout(0.5, broadcast_axes="batch")(x, key=jax.random.key(0)).axes
    (Axis('batch', 2), Axis('embed', 3))
    """

    pdrop: float = eqx.field(static=True)
    broadcast_axes: Optional[AxisSelection] = eqx.field(static=True, default=None)
    inference: bool = eqx.field(static=True, default=False)

    def __post_init__(self):
        if not 0.0 <= self.pdrop < 1.0:
            raise ValueError(f"Dropout: pdrop must be in [0, 1), got {self.pdrop}")
        if self.broadcast_axes is not None:
            object.__setattr__(self, "broadcast_axes", ensure_tuple(self.broadcast_axes))

    def __call__(self, x: NamedArray, *, key: Optional[jax.Array] = None,
                 inference: Optional[bool] = None) -> NamedArray:
        """Apply dropout; ``inference`` given here overrides the module's field."""
        inference = self.inference if inference is None else inference
        return dropout(x, self.pdrop, key=key, broadcast_axes=self.broadcast_axes, inference=inference)


__all__ = ["dropout", "Dropout"]
