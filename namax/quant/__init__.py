"""Implicit arrays (Qax style): values that stand for dense arrays they never build.

``import namax.quant as qax`` is a drop-in for Qax: ``qax.ImplicitArray``, ``qax.aux_field``,
``qax.primitive_handler``, ``qax.default_handler``, ``qax.use_implicit_args``,
``qax.materialize_nested``, ``qax.freeze_keys``, ``qax.EmptyNode``, ``qax.ArrayValue``
and the modules ``qax.symbols``, ``qax.constants``, ``qax.primitives``, ``qax.utils``.
Quax's spellings are aliases: ``quaxify`` = ``use_implicit_args``, ``register`` =
``primitive_handler``.

>>> import jax.numpy as jnp
>>> import namax.quant as qax
>>> qax.use_implicit_args(lambda z, x: z + x)(qax.Zeros(shape=(2,)), jnp.ones(2)).tolist()
[1.0, 1.0]
"""

from . import constants, int4, int4_dot, lora, nullable, primitives, symbols, utils
from .handlers import default_handler, dispatch, primitive_handler, register
from .implicit import (ArrayValue, ImplicitArray, UninitializedAval, aux_field, is_implicit, materialize_value)
from .int4 import Int4Weight
from .lora import LoraWeight
from .nullable import NullableArray
from .symbols import SymbolicConstant
from .use_implicit import quaxify, use_implicit_args
from .utils import EmptyNode, freeze_keys, materialize_nested
from .zeros import Zeros

materialize = materialize_value
"""Alias of :func:`materialize_value`: a dense array for any (possibly nested) implicit value."""

__all__ = [
    "ArrayValue", "EmptyNode", "ImplicitArray", "Int4Weight", "LoraWeight", "NullableArray", "SymbolicConstant",
    "UninitializedAval", "Zeros", "aux_field", "constants", "default_handler", "dispatch", "freeze_keys", "int4",
    "int4_dot", "is_implicit", "lora", "materialize", "materialize_nested", "materialize_value", "nullable",
    "primitive_handler", "primitives", "quaxify", "register", "symbols", "use_implicit_args", "utils",
]
