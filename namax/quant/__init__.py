"""Implicit arrays (Qax style): values that stand for dense arrays they never build.

>>> import jax.numpy as jnp
>>> import namax.quant as qax
>>> qax.use_implicit_args(lambda z, x: z + x)(qax.Zeros(shape=(2,)), jnp.ones(2)).tolist()
[1.0, 1.0]
"""

from . import int4, int4_dot, lora, utils
from .handlers import default_handler, dispatch, primitive_handler
from .implicit import ArrayValue, ImplicitArray, aux_field, is_implicit, materialize_value
from .int4 import Int4Weight
from .lora import LoraWeight
from .use_implicit import use_implicit_args
from .zeros import Zeros

__all__ = [
    "ArrayValue", "ImplicitArray", "Int4Weight", "LoraWeight", "Zeros", "aux_field", "default_handler", "dispatch",
    "int4", "int4_dot", "is_implicit", "lora", "materialize_value", "primitive_handler", "use_implicit_args",
    "utils",
]
