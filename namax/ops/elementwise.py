"""Elementwise math on NamedArrays: every jnp unary/binary op, broadcasting by name."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax.numpy as jnp

from ..named import NamedArray, binary, broadcast_arrays, unary, wrap


_INTEGER_ONLY = ("invert", "bitwise_not")


def _unary(fn: Callable) -> Callable:
    def op(x: Any, *args, **kwargs):
        return unary(fn, x, *args, **kwargs)

    op.__name__ = fn.__name__
    op.__qualname__ = fn.__name__
    dtype = ", dtype=bool" if fn.__name__ in _INTEGER_ONLY else ""
    op.__doc__ = f"Elementwise ``jnp.{fn.__name__}``; keeps the axes of a NamedArray.\n\n" \
                 f">>> import namax as nx\n>>> nx.{fn.__name__}(nx.ones(nx.Axis('b', 2){dtype})).axes\n(Axis('b', 2),)\n"
    return op


def _binary(fn: Callable) -> Callable:
    def op(a: Any, b: Any, **kwargs):
        return binary(functools.partial(fn, **kwargs) if kwargs else fn, a, b)

    op.__name__ = fn.__name__
    op.__qualname__ = fn.__name__
    op.__doc__ = f"Elementwise ``jnp.{fn.__name__}``, broadcasting NamedArrays by axis name (union of axes).\n\n" \
                 f">>> import namax as nx\n>>> A, B = nx.Axis('a', 2), nx.Axis('b', 3)\n" \
                 f">>> nx.{fn.__name__}(nx.arange(A, start=1), nx.arange(B, start=1)).axes\n" \
                 f"(Axis('a', 2), Axis('b', 3))\n"
    return op


UNARY_NAMES = (
    "abs absolute negative positive sign floor ceil round rint trunc exp exp2 expm1 log log2 log10 log1p "
    "sqrt cbrt square reciprocal sin cos tan arcsin arccos arctan sinh cosh tanh arcsinh arccosh arctanh "
    "deg2rad rad2deg degrees radians isnan isinf isfinite signbit logical_not invert bitwise_not "
    "real imag conj conjugate angle sinc i0 nan_to_num"
).split()

BINARY_NAMES = (
    "add subtract multiply divide true_divide floor_divide mod remainder fmod power float_power "
    "maximum minimum fmax fmin arctan2 hypot copysign nextafter logaddexp logaddexp2 "
    "equal not_equal less less_equal greater greater_equal logical_and logical_or logical_xor "
    "bitwise_and bitwise_or bitwise_xor left_shift right_shift isclose heaviside ldexp gcd lcm"
).split()

_g = globals()
for _n in UNARY_NAMES:
    _g[_n] = _unary(getattr(jnp, _n))
for _n in BINARY_NAMES:
    _g[_n] = _binary(getattr(jnp, _n))
del _g, _n

__all__ = [*UNARY_NAMES, *BINARY_NAMES, "where", "clip"]


def where(condition: Any, x: Any, y: Any) -> Any:
    """``jnp.where`` with all three operands broadcast by name.

    The result's axes come in the order of ``x``, then ``y``, then ``condition`` (so
    masking a value keeps its layout).

    >>> import namax as nx
    >>> B = nx.Axis("b", 3)
    >>> nx.where(nx.arange(B) > 0, 1.0, 0.0).array.tolist()
    [0.0, 1.0, 1.0]
    """
    if not any(isinstance(v, NamedArray) for v in (condition, x, y)):
        return jnp.where(condition, x, y)
    axes, (a, b, c) = broadcast_arrays(x, y, condition, what="operands of where")
    return wrap(jnp.where(c, a, b), axes)


def clip(x: Any, a_min: Any = None, a_max: Any = None) -> Any:
    """Clip values into ``[a_min, a_max]``; bounds may be NamedArrays (broadcast by name).

    >>> import namax as nx
    >>> nx.clip(nx.arange(nx.Axis("x", 5)), 1, 3).array.tolist()
    [1, 1, 2, 3, 3]
    """
    if not any(isinstance(v, NamedArray) for v in (x, a_min, a_max)):
        return jnp.clip(x, a_min, a_max)
    axes, (v, lo, hi) = broadcast_arrays(x, a_min, a_max, what="operands of clip")
    return wrap(jnp.clip(v, lo, hi), axes)
