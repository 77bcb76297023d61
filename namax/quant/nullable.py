"""``NullableArray``: an array with a validity mask that follows it through computation.

An entry is valid where ``mask`` is True. Elementwise ops combine the masks of their
nullable operands with AND (a dense or other implicit operand is valid everywhere);
reductions reduce the mask with AND over the same axes (a result is valid only if every
entry it combines is); shape ops move the mask with the values; running reductions
(``cumsum``, ...) carry a running AND. Anything else (``dot_general``, ...) materializes
to ``val`` with the usual warning: the mask is dropped. ``val`` may itself be implicit
(e.g. symbolic zeros); its own handlers then apply.

>>> import jax.numpy as jnp
>>> from namax.quant.use_implicit import use_implicit_args
>>> x = NullableArray(jnp.array([1.0, 2.0, 3.0]), jnp.array([True, False, True]))
>>> y = use_implicit_args(lambda a: a * 10 + 1)(x)
>>> y.val.tolist(), y.mask.tolist()
([11.0, 21.0, 31.0], [True, False, True])
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .constants import CUMULATIVE_REDUCTION_OPS, ELEMENTWISE_BINOPS, ELEMENTWISE_UNOPS, REDUCTION_OPS, SHAPE_OPS
from .handlers import default_handler, primitive_handler
from .implicit import ArrayValue, ImplicitArray, is_implicit


@dataclasses.dataclass
class NullableArray(ImplicitArray):
    """``val`` (dense or implicit) with a boolean ``mask`` of the same shape (True = valid).

    Materializing gives ``val`` (masked entries keep whatever value they hold); use
    :meth:`filled` for a dense array with the invalid entries replaced.

    >>> x = NullableArray(jnp.arange(3.0), jnp.array([True, True, False]))
    >>> x.shape, x.dtype, x.filled(-1.0).tolist()
    ((3,), dtype('float32'), [0.0, 1.0, -1.0])
    """

    val: ArrayValue
    mask: ArrayValue

    def __post_init__(self) -> None:
        super().__post_init__()
        mshape, mdtype = tuple(np.shape(self.mask)), jnp.result_type(self.mask)
        if mshape != tuple(self.shape):
            raise ValueError(f"NullableArray: mask shape {mshape} differs from val shape {tuple(self.shape)}")
        if jnp.dtype(mdtype) != jnp.bool_:
            raise TypeError(f"NullableArray: mask must be boolean, got dtype {jnp.dtype(mdtype)}")

    def compute_shape(self) -> tuple:
        return tuple(self.val.shape) if hasattr(self.val, "shape") else tuple(np.shape(self.val))

    def compute_dtype(self) -> Any:
        return self.val.dtype if hasattr(self.val, "dtype") else jnp.result_type(self.val)

    def materialize(self) -> Any:
        return self.val

    def filled(self, fill_value: Any) -> jax.Array:
        """A dense array: ``val`` where valid, ``fill_value`` elsewhere.

        >>> NullableArray(jnp.ones(2), jnp.array([False, True])).filled(0.0).tolist()
        [0.0, 1.0]
        """
        from .implicit import materialize_value

        return jnp.where(materialize_value(self.mask), materialize_value(self.val),
                         jnp.asarray(fill_value, self.dtype))


def _parts(x: Any) -> tuple[Any, Any]:
    return (x.val, x.mask) if isinstance(x, NullableArray) else (x, None)


@primitive_handler(ELEMENTWISE_UNOPS | ELEMENTWISE_BINOPS | {"select_n", "clamp"})
def _elementwise(primitive, *args: Union[NullableArray, ArrayValue], **params):
    if not any(isinstance(a, NullableArray) for a in args):
        return NotImplemented
    vals, masks = zip(*map(_parts, args))
    out = default_handler(primitive, *vals, **params)
    mask = functools.reduce(jnp.logical_and, [m for m in masks if m is not None])
    return NullableArray(out, jnp.broadcast_to(mask, np.shape(out) if not is_implicit(out) else out.shape))


@primitive_handler(REDUCTION_OPS)
def _reduce(primitive, x: NullableArray, *, axes, **params):
    val = default_handler(primitive, x.val, axes=axes, **params)
    return NullableArray(val, jnp.all(x.mask, axis=tuple(axes)))


@primitive_handler(CUMULATIVE_REDUCTION_OPS)
def _cumulative(primitive, x: NullableArray, *, axis, reverse, **params):
    val = default_handler(primitive, x.val, axis=axis, reverse=reverse, **params)
    mask = lax.associative_scan(jnp.logical_and, x.mask, reverse=reverse, axis=axis)
    return NullableArray(val, mask)


@primitive_handler(SHAPE_OPS)
def _moved(primitive, x: NullableArray, *rest, **params):
    if any(is_implicit(r) for r in rest):
        return NotImplemented
    return NullableArray(default_handler(primitive, x.val, *rest, **params),
                         default_handler(primitive, x.mask, *rest, **params))


__all__ = ["NullableArray"]
