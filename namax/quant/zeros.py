"""``Zeros``: a symbolic array of zeros, carried through arithmetic with no FLOPs.

>>> import jax.numpy as jnp
>>> from namax.quant import use_implicit_args
>>> use_implicit_args(lambda z, x: (z + x) * 2)(Zeros(shape=(3,)), jnp.ones(3)).tolist()
[2.0, 2.0, 2.0]
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .handlers import primitive_handler
from .implicit import ImplicitArray, is_implicit


class Zeros(ImplicitArray):
    """An array of ``shape`` and ``dtype`` that is all zeros; stores nothing.

    >>> z = Zeros(shape=(2, 3))
    >>> z, jax.tree_util.tree_leaves(z), z.materialize().sum().item()
    (Zeros((2, 3), float32), [], 0.0)
    """

    default_dtype = jnp.float32

    def materialize(self) -> jax.Array:
        return jnp.zeros(self.shape, self.dtype)

    def __repr__(self) -> str:
        return f"Zeros({self.shape}, {jnp.dtype(self.dtype).name})"

    __str__ = __repr__


def _spec(x: Any) -> Any:
    if is_implicit(x):
        return jax.ShapeDtypeStruct(x.shape, x.dtype)
    return x if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer) else jax.ShapeDtypeStruct(
        np.shape(x), jnp.result_type(x))


def _result(primitive: Any, args: tuple, params: dict) -> Zeros:
    """Zeros of the shape and dtype ``primitive`` gives on ``args``."""
    out = jax.eval_shape(lambda *a: primitive.bind(*a, **params), *[_spec(a) for a in args])
    return Zeros(shape=out.shape, dtype=out.dtype)


def _as_result(primitive: Any, x: Any, args: tuple, params: dict) -> Any:
    """``x`` broadcast and cast to what ``primitive`` gives on ``args``."""
    out = jax.eval_shape(lambda *a: primitive.bind(*a, **params), *[_spec(a) for a in args])
    if tuple(np.shape(x) if not is_implicit(x) else x.shape) == tuple(out.shape) and jnp.dtype(
            x.dtype if is_implicit(x) else jnp.result_type(x)) == out.dtype:
        return x
    if is_implicit(x):
        return NotImplemented
    return jnp.broadcast_to(jnp.asarray(x), out.shape).astype(out.dtype)


@primitive_handler(["add", "add_any"])
def _add(primitive, z: Zeros, x, **params):
    if isinstance(x, Zeros):
        return _result(primitive, (z, x), params)
    return _as_result(primitive, x, (z, x), params)


@primitive_handler("sub")
def _sub_left(primitive, z: Zeros, x, **params):
    if isinstance(x, Zeros):
        return _result(primitive, (z, x), params)
    if is_implicit(x):
        return NotImplemented
    return _as_result(primitive, -jnp.asarray(x), (z, x), params)


@primitive_handler("sub")
def _sub_right(primitive, x, z: Zeros, **params):
    if isinstance(x, Zeros):
        return _result(primitive, (x, z), params)
    return _as_result(primitive, x, (x, z), params)


@primitive_handler("mul")
def _mul(primitive, z: Zeros, x, **params):
    return _result(primitive, (z, x), params)


@primitive_handler("dot_general")
def _dot_left(primitive, z: Zeros, x, **params):
    return _result(primitive, (z, x), params)


@primitive_handler("dot_general")
def _dot_right(primitive, x, z: Zeros, **params):
    return _result(primitive, (x, z), params)


@primitive_handler(["neg", "broadcast_in_dim", "reshape", "transpose", "squeeze", "convert_element_type",
                    "reduce_sum", "reduce_max", "reduce_min", "copy", "slice", "rev",
                    "dynamic_slice", "sin", "tan", "tanh", "sinh", "abs", "sign", "floor", "ceil",
                    "round", "sqrt", "stop_gradient", "real", "imag", "conj"])
def _unary(primitive, z: Zeros, *rest, **params):
    return _result(primitive, (z, *rest), params)


@primitive_handler("integer_pow")
def _integer_pow(primitive, z: Zeros, *, y: int):
    if y <= 0:
        return NotImplemented
    return Zeros(shape=z.shape, dtype=z.dtype)


@primitive_handler("select_n")
def _select(primitive, which, *cases: Zeros):
    return _result(primitive, (which, *cases), {})
