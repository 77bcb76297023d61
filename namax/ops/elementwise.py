"""Elementwise math on NamedArrays: every jnp unary/binary op, broadcasting by name."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from ..named import NamedArray, binary, broadcast_arrays, unary, wrap


# the dtype each op's docstring example needs (default float32)
_EXAMPLE_DTYPE = {"invert": "bool", "bitwise_not": "bool", "bitwise_invert": "bool", "bitwise_count": "int32"}


def _unary(fn: Callable, where: str = "jnp", name: str | None = None) -> Callable:
    def op(x: Any, *args, **kwargs):
        return unary(fn, x, *args, **kwargs)

    name = name or fn.__name__
    op.__name__ = op.__qualname__ = name
    dtype = f", dtype=jnp.{_EXAMPLE_DTYPE[name]}" if name in _EXAMPLE_DTYPE else ""
    op.__doc__ = f"Elementwise ``{where}.{fn.__name__}``; keeps the axes of a NamedArray.\n\n" \
                 f">>> import jax.numpy as jnp, namax as nx\n" \
                 f">>> nx.{name}(nx.ones(nx.Axis('b', 2){dtype})).axes\n(Axis('b', 2),)\n"
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


def _two_outputs(fn: Callable, arity: int) -> Callable:
    def op(*args):
        if len(args) != arity:
            raise TypeError(f"{fn.__name__} takes {arity} operand(s), got {len(args)}")
        if not any(isinstance(a, NamedArray) for a in args):
            return fn(*args)
        axes, raw = broadcast_arrays(*args, what=f"operands of {fn.__name__}")
        return tuple(wrap(out, axes) for out in fn(*raw))

    op.__name__ = op.__qualname__ = fn.__name__
    operands = ", ".join(["nx.arange(nx.Axis('x', 3), start=1)"] + ["2"] * (arity - 1))
    op.__doc__ = f"``jnp.{fn.__name__}`` by name: a pair of NamedArrays with the operands' broadcast axes.\n\n" \
                 f">>> import namax as nx\n>>> first, second = nx.{fn.__name__}({operands})\n" \
                 f">>> first.axes, second.axes\n((Axis('x', 3),), (Axis('x', 3),))\n"
    return op


UNARY_NAMES = (
    "abs absolute negative positive sign floor ceil round rint trunc exp exp2 expm1 log log2 log10 log1p "
    "sqrt cbrt square reciprocal sin cos tan arcsin arccos arctan sinh cosh tanh arcsinh arccosh arctanh "
    "deg2rad rad2deg degrees radians isnan isinf isfinite signbit logical_not invert bitwise_not "
    "real imag conj conjugate angle sinc i0 nan_to_num "
    "copy fabs around iscomplex isreal isneginf isposinf bitwise_count bitwise_invert"
).split()

# unary ops that live outside jnp: name -> (function, where it comes from)
OTHER_UNARY = {"rsqrt": (jax.lax.rsqrt, "jax.lax"), "fix": (jnp.trunc, "jnp")}  # jnp.fix is gone

BINARY_NAMES = (
    "add subtract multiply divide true_divide floor_divide mod remainder fmod power float_power "
    "maximum minimum fmax fmin arctan2 hypot copysign nextafter logaddexp logaddexp2 "
    "equal not_equal less less_equal greater greater_equal logical_and logical_or logical_xor "
    "bitwise_and bitwise_or bitwise_xor left_shift right_shift isclose heaviside ldexp gcd lcm "
    "bitwise_left_shift bitwise_right_shift"
).split()

# ops with two outputs (each a NamedArray with the operands' broadcast axes): name -> arity
TWO_OUTPUT_NAMES = {"frexp": 1, "divmod": 2}


def _comparable(a: Any, b: Any, rule: str) -> bool:
    """Whether ``a`` and ``b``'s axes (by name and size) allow comparing them under ``rule``."""
    axes_a = a.axes if isinstance(a, NamedArray) else ()
    axes_b = b.axes if isinstance(b, NamedArray) else ()
    if rule == "broadcast":
        return True
    if rule == "same_axes":
        return set(axes_a) == set(axes_b)
    # "subset": one operand's axes are among the other's (names and sizes), as Haliax requires
    return set(axes_a) <= set(axes_b) or set(axes_b) <= set(axes_a)


def _scalar_comparison(fn: Callable, rule: str) -> Callable:
    def op(a: Any, b: Any, *args, **kwargs):
        if not isinstance(a, NamedArray) and not isinstance(b, NamedArray):
            return fn(a, b, *args, **kwargs)
        if not _comparable(a, b, rule):
            return wrap(jnp.asarray(False), ())
        axes, raw = broadcast_arrays(a, b, what=f"operands of {fn.__name__}")
        shape = tuple(ax.size for ax in axes)
        ra, rb = (jnp.broadcast_to(r, shape) for r in raw)
        return wrap(fn(ra, rb, *args, **kwargs), ())

    op.__name__ = op.__qualname__ = fn.__name__
    op.__doc__ = (
        f"``jnp.{fn.__name__}`` matching elements by axis name (axis order does not matter): "
        f"{_RULE_DOCS[rule]} Returns a 0-d bool NamedArray (``bool()`` of it works, and it "
        f"works under ``jit``).\n\n"
        f">>> import jax.numpy as jnp, namax as nx\n"
        f">>> x = nx.named(jnp.arange(6.0).reshape(2, 3), ('a', 'b'))\n"
        f">>> bool(nx.{fn.__name__}(x, x.rearrange(('b', 'a'))))\nTrue\n"
    )
    return op


_RULE_DOCS = {
    "broadcast": "the operands broadcast by name; a name with two sizes is an error.",
    "same_axes": "False unless both have the same axes (names and sizes).",
    "subset": "the operands broadcast by name; False unless one's axes are among the other's "
              "(names and sizes).",
}

# ops comparing two whole arrays to one bool: name -> how their axes must relate
SCALAR_COMPARISONS = {"allclose": "broadcast", "array_equal": "same_axes", "array_equiv": "subset"}

_g = globals()
for _n in UNARY_NAMES:
    _g[_n] = _unary(getattr(jnp, _n))
for _n in BINARY_NAMES:
    _g[_n] = _binary(getattr(jnp, _n))
for _n, (_fn, _where) in OTHER_UNARY.items():
    _g[_n] = _unary(_fn, _where, _n)
for _n, _arity in TWO_OUTPUT_NAMES.items():
    _g[_n] = _two_outputs(getattr(jnp, _n), _arity)
for _n, _rule in SCALAR_COMPARISONS.items():
    _g[_n] = _scalar_comparison(getattr(jnp, _n), _rule)
del _g, _n, _fn, _where, _arity, _rule

__all__ = [*UNARY_NAMES, *BINARY_NAMES, *OTHER_UNARY, *TWO_OUTPUT_NAMES, *SCALAR_COMPARISONS,
           "where", "clip"]


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
