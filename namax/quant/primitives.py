"""Handler registration and lookup by primitive (Qax's ``qax.primitives``).

``ArrayValue``, ``primitive_handler`` and ``default_handler`` are the engine's own
(:mod:`namax.quant.handlers`); this module adds Qax's lookup helpers.

>>> from namax.quant.primitives import get_lax_primitive_by_name
>>> get_lax_primitive_by_name("mul").name
'mul'
"""

from __future__ import annotations

from typing import Any, Callable, Union

from jax import lax
from jax.extend import core as jcore
from jax.extend.core import primitives as _prims

from .handlers import complete_params, default_handler, dispatch, primitive_defaults, primitive_handler, register
from .implicit import ArrayValue

_BY_NAME = {p.name: p for p in [*vars(_prims).values(), *vars(lax).values()] if isinstance(p, jcore.Primitive)}


def get_lax_primitive_by_name(name: str) -> jcore.Primitive:
    """The JAX primitive called ``name`` (e.g. ``"mul"`` -> ``mul_p``).

    >>> get_lax_primitive_by_name("reduce_sum")
    reduce_sum
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown primitive name {name!r}; pass the Primitive object for custom primitives") from None


def get_primitive_handler(primitive: Union[str, jcore.Primitive]) -> Callable:
    """A function ``(primitive, *args, **params)`` running the handlers registered for
    ``primitive`` (most specific first), materializing when none handles the arguments.

    >>> import jax.numpy as jnp
    >>> from namax.quant.zeros import Zeros
    >>> handle = get_primitive_handler("mul")
    >>> handle(get_lax_primitive_by_name("mul"), Zeros(shape=(2,)), jnp.ones(2))
    Zeros((2,), float32)
    """
    prim = get_lax_primitive_by_name(primitive) if isinstance(primitive, str) else primitive
    if not isinstance(prim, jcore.Primitive):
        raise TypeError(f"expected a primitive or a primitive name, got {primitive!r}")

    def handle(p: jcore.Primitive, *args: Any, **params: Any) -> Any:
        if p is not prim:
            raise ValueError(f"this handler is for primitive {prim.name}, got {p.name}")
        return dispatch(prim, *args, **params)

    handle.__name__ = f"{prim.name}_handler"
    return handle


__all__ = ["ArrayValue", "complete_params", "default_handler", "get_lax_primitive_by_name", "get_primitive_handler",
           "primitive_defaults", "primitive_handler", "register"]
