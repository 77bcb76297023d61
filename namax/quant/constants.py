"""Sets of JAX primitive names, grouped by how they treat their operands (Qax's ``qax.constants``).

Handlers for whole families of primitives register on these sets, e.g.
``@primitive_handler(ELEMENTWISE_UNOPS)``. Every name is a primitive of the installed JAX
(``jax.extend.core.primitives`` or a ``jax.lax`` ``*_p``); the sets are fuller than Qax's, so code written for Qax
handles more primitives here, never fewer.

>>> from namax.quant.constants import ELEMENTWISE_BINOPS, REDUCTION_OPS
>>> "mul" in ELEMENTWISE_BINOPS, "reduce_sum" in REDUCTION_OPS
(True, True)
"""

from __future__ import annotations

COMMUTATIVE_OPS = frozenset({"add", "add_any", "and", "eq", "max", "min", "mul", "ne", "or", "xor"})
"""Binary primitives with ``f(a, b) == f(b, a)``: handlers also match the swapped operands."""

ELEMENTWISE_UNOPS = frozenset({
    "abs", "acos", "acosh", "asin", "asinh", "atan", "atanh", "bessel_i0e", "bessel_i1e", "cbrt", "ceil",
    "clz", "conj", "convert_element_type", "copy", "cos", "cosh", "digamma", "erf", "erf_inv", "erfc", "exp",
    "exp2", "expm1", "floor", "imag", "integer_pow", "is_finite", "lgamma", "log", "log1p", "logistic", "neg",
    "not", "population_count", "real", "reduce_precision", "round", "rsqrt", "sign", "sin", "sinh", "sqrt",
    "square", "stop_gradient", "tan", "tanh",
})
"""One-operand primitives applied to each element independently (output shape = input shape)."""

ELEMENTWISE_BINOPS = frozenset({
    "add", "add_any", "and", "atan2", "complex", "div", "eq", "ge", "gt", "igamma", "igamma_grad_a", "igammac",
    "le", "lt", "max", "min", "mul", "ne", "nextafter", "or", "pow", "rem", "shift_left", "shift_right_arithmetic",
    "shift_right_logical", "sub", "xor",
})
"""Two-operand primitives of equal-shaped operands, applied element by element."""

REDUCTION_OPS = frozenset({
    "argmax", "argmin", "reduce_and", "reduce_max", "reduce_min", "reduce_or", "reduce_prod", "reduce_sum",
    "reduce_xor",
})
"""Primitives reducing their operand over the axes in their ``axes`` parameter."""

CUMULATIVE_REDUCTION_OPS = frozenset({"cumlogsumexp", "cummax", "cummin", "cumprod", "cumsum"})
"""Running reductions along the ``axis`` parameter (output shape = input shape)."""

SHAPE_OPS = frozenset({
    "broadcast_in_dim", "reshape", "transpose", "squeeze", "rev", "slice", "dynamic_slice", "copy", "tile",
})
"""Primitives that only move, copy or drop elements: a constant array stays that constant."""

__all__ = ["COMMUTATIVE_OPS", "CUMULATIVE_REDUCTION_OPS", "ELEMENTWISE_BINOPS", "ELEMENTWISE_UNOPS",
           "REDUCTION_OPS", "SHAPE_OPS"]
