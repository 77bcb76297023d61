"""``SymbolicConstant``: ``jnp.full(shape, value, dtype)`` kept symbolic (Qax's ``qax.symbols``).

The value is static (pytree aux data, a numpy scalar known at trace time), so arithmetic
on constants is done while tracing and a function of constants compiles to nothing:

- elementwise ops whose operands are all constants (or scalar literals) give a constant;
  with a dense operand they give the dense result, the constant entering as a broadcast
  scalar (``x + 0``, ``x - 0``, ``x * 1``, ``x / 1`` return ``x`` itself);
- shape ops (broadcast, reshape, transpose, squeeze, slices, reversal, gather, padding and
  concatenation with the same value) keep the value and change the shape;
- reductions give a constant (``sum`` = value times the count, ``prod`` = value to the
  count, ``max``/``min``/``and``/``or`` = value, ``argmax``/``argmin`` = 0);
- ``dot_general`` of two constants is a constant; with a dense operand it sums that
  operand over the contracted axes (no dense array of the constant's shape);
- anything else materializes it with the usual warning.

Unlike Qax's, these handlers never drop a NaN: ``0 * x`` with a dense ``x`` is computed.

>>> import jax.numpy as jnp
>>> from namax.quant.use_implicit import use_implicit_args
>>> c = SymbolicConstant(2.0, shape=(3, 4), dtype=jnp.float32)
>>> use_implicit_args(lambda c: jnp.sum(c * c + 1.0, axis=0))(c)
SymbolicConstant(15.0, shape=(4,), dtype=float32)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .constants import ELEMENTWISE_BINOPS, ELEMENTWISE_UNOPS, SHAPE_OPS
from .handlers import default_handler, primitive_handler
from .implicit import ImplicitArray, aux_field, is_implicit
from .use_implicit import use_implicit_args


def _scalar(value: Any, dtype: Any, what: str = "value") -> np.generic:
    """``value`` as a hashable numpy scalar of ``dtype``; rejects traced and non-scalar values."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"SymbolicConstant {what} must be known at trace time, got a traced value; "
                        f"use jnp.full for a value computed inside jit")
    if is_implicit(value):
        raise TypeError(f"SymbolicConstant {what} must be a scalar, got {type(value).__name__}")
    arr = np.asarray(value)
    if arr.shape != ():
        raise ValueError(f"SymbolicConstant {what} must be a scalar, got an array of shape {arr.shape}")
    with np.errstate(all="ignore"):
        return np.asarray(arr.astype(np.dtype(dtype)))[()]


@dataclasses.dataclass
class SymbolicConstant(ImplicitArray):
    """An array of ``shape`` whose every element is ``value`` (a static scalar); stores nothing.

    ``dtype`` defaults to the value's (a Python float gives float32). ``weak_type`` is kept
    for Qax compatibility and carried as is.

    >>> c = SymbolicConstant(3, shape=(2,), dtype=jnp.float32)
    >>> c, c.value, c.materialize().tolist(), jax.tree_util.tree_leaves(c)
    (SymbolicConstant(3.0, shape=(2,), dtype=float32), np.float32(3.0), [3.0, 3.0], [])
    """

    value: Any = aux_field()
    weak_type: bool = aux_field(default=False)

    def __post_init__(self) -> None:
        if self.shape is None:
            raise TypeError("SymbolicConstant needs shape=")
        if self.dtype is None:
            if isinstance(self.value, jax.core.Tracer):
                _scalar(self.value, np.float32)
            self.dtype = jnp.result_type(self.value)
        super().__post_init__()
        self.value = _scalar(self.value, self.dtype)

    def materialize(self) -> jax.Array:
        return jnp.full(self.shape, self.value, self.dtype)

    def __repr__(self) -> str:
        return f"SymbolicConstant({self.value.item()!r}, shape={self.shape}, dtype={self.dtype.name})"

    __str__ = __repr__

    def copy(self) -> "SymbolicConstant":
        """The same constant (it is immutable data).

        >>> SymbolicConstant(1.0, shape=(2,)).copy()
        SymbolicConstant(1.0, shape=(2,), dtype=float32)
        """
        return SymbolicConstant(self.value, shape=self.shape, dtype=self.dtype, weak_type=self.weak_type)


# -- constructors (Qax's names, and the jnp-style ones) ----------------------------------------

def symbolic_full_like(x: Any, fill_value: Any, shape: Optional[tuple] = None, dtype: Any = None) -> SymbolicConstant:
    """A constant ``fill_value`` with the shape of ``x`` (or ``shape``); ``dtype`` defaults to
    the fill value's, as in Qax.

    >>> symbolic_full_like(jnp.ones((2, 3)), 7)
    SymbolicConstant(7, shape=(2, 3), dtype=int32)
    """
    shape = tuple(np.shape(x) if not is_implicit(x) else x.shape) if shape is None else tuple(shape)
    dtype = jnp.result_type(fill_value) if dtype is None else dtype
    return SymbolicConstant(fill_value, shape=shape, dtype=dtype)


def symbolic_zero_like(x: Any, shape: Optional[tuple] = None, dtype: Any = None) -> SymbolicConstant:
    """Symbolic zeros with the shape and dtype of ``x`` (or ``shape``/``dtype``).

    >>> symbolic_zero_like(jnp.ones((2,), jnp.bfloat16))
    SymbolicConstant(0.0, shape=(2,), dtype=bfloat16)
    """
    dtype = (x.dtype if hasattr(x, "dtype") else jnp.result_type(x)) if dtype is None else dtype
    return symbolic_full_like(x, 0, shape=shape, dtype=dtype)


def symbolic_ones_like(x: Any, shape: Optional[tuple] = None, dtype: Any = None) -> SymbolicConstant:
    """Symbolic ones with the shape and dtype of ``x`` (or ``shape``/``dtype``).

    >>> symbolic_ones_like(jnp.zeros((2,), jnp.int8))
    SymbolicConstant(1, shape=(2,), dtype=int8)
    """
    dtype = (x.dtype if hasattr(x, "dtype") else jnp.result_type(x)) if dtype is None else dtype
    return symbolic_full_like(x, 1, shape=shape, dtype=dtype)


def symbolic_full(shape: tuple, fill_value: Any, dtype: Any = None) -> SymbolicConstant:
    """``jnp.full`` kept symbolic.

    >>> symbolic_full((2, 2), 0.5)
    SymbolicConstant(0.5, shape=(2, 2), dtype=float32)
    """
    return SymbolicConstant(fill_value, shape=tuple(shape), dtype=dtype)


def symbolic_zeros(shape: tuple, dtype: Any = jnp.float32) -> SymbolicConstant:
    """``jnp.zeros`` kept symbolic.

    >>> symbolic_zeros((3,))
    SymbolicConstant(0.0, shape=(3,), dtype=float32)
    """
    return SymbolicConstant(0, shape=tuple(shape), dtype=dtype)


def symbolic_ones(shape: tuple, dtype: Any = jnp.float32) -> SymbolicConstant:
    """``jnp.ones`` kept symbolic.

    >>> symbolic_ones((3,), jnp.int32)
    SymbolicConstant(1, shape=(3,), dtype=int32)
    """
    return SymbolicConstant(1, shape=tuple(shape), dtype=dtype)


@use_implicit_args
def broadcast_to(val: Any, shape: tuple) -> Any:
    """``jnp.broadcast_to`` accepting implicit arrays (a constant stays a constant).

    >>> broadcast_to(symbolic_zeros((3,)), (2, 3))
    SymbolicConstant(0.0, shape=(2, 3), dtype=float32)
    """
    return jnp.broadcast_to(val, shape)


@use_implicit_args
def astype(val: Any, dtype: Any) -> Any:
    """``val.astype(dtype)`` accepting implicit arrays (a constant stays a constant).

    >>> astype(symbolic_ones((2,)), jnp.int32)
    SymbolicConstant(1, shape=(2,), dtype=int32)
    """
    return val.astype(dtype)


# -- handlers ------------------------------------------------------------------------------------

def _spec(x: Any) -> Any:
    if is_implicit(x):
        return jax.ShapeDtypeStruct(x.shape, x.dtype)
    if isinstance(x, jax.Array):
        aval = jax.typeof(x)
        return jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=aval.weak_type)
    return x  # a Python or numpy scalar (a literal of the jaxpr)


def _out(primitive: Any, args: tuple, params: dict) -> Any:
    """The abstract result (a ShapeDtypeStruct) of ``primitive`` on ``args``."""
    return jax.eval_shape(lambda *a: default_handler(primitive, *a, **params), *[_spec(a) for a in args])


def _const(value: Any, out: Any) -> SymbolicConstant:
    return SymbolicConstant(value, shape=tuple(out.shape), dtype=out.dtype)


def _foldable(x: Any) -> bool:
    """A constant operand: a SymbolicConstant or a concrete scalar (a literal)."""
    if isinstance(x, SymbolicConstant):
        return True
    return not isinstance(x, jax.core.Tracer) and not is_implicit(x) and np.shape(x) == ()


def _scalar_of(x: Any) -> np.ndarray:
    """A constant operand as a 0-d numpy array of its dtype."""
    if isinstance(x, SymbolicConstant):
        return np.asarray(x.value, x.dtype)
    return np.asarray(x, dtype=jnp.result_type(x))


def _eval_now(primitive: Any, args: list, params: dict) -> Any:
    """``primitive`` on concrete (numpy) operands, computed while tracing."""
    with jax.ensure_compile_time_eval():
        operands = [jnp.asarray(a) for a in args]
        return np.asarray(default_handler(primitive, *operands, **params))[()]


def _dense(x: Any, shape: tuple) -> Any:
    """An operand as the primitive receives it: a constant becomes a broadcast scalar."""
    if isinstance(x, SymbolicConstant):
        return jnp.broadcast_to(jnp.asarray(x.value, x.dtype), shape)
    return x


_IDENTITY = {"add": (0, 0), "add_any": (0, 0), "mul": (1, 1), "sub": (None, 0), "div": (None, 1)}


@primitive_handler(ELEMENTWISE_UNOPS | ELEMENTWISE_BINOPS | {"clamp", "select_n"})
def _elementwise(primitive, *args: Union[SymbolicConstant, jax.Array], **params):
    if not any(isinstance(a, SymbolicConstant) for a in args):
        return NotImplemented
    out = _out(primitive, args, params)
    if primitive.name == "select_n" and _foldable(args[0]):
        chosen = args[1 + int(_scalar_of(args[0]))]
        if isinstance(chosen, SymbolicConstant):
            return _const(chosen.value, out)
        return chosen
    if primitive.name == "select_n" and all(isinstance(c, SymbolicConstant) for c in args[1:]):
        values = {np.asarray(c.value).tobytes() for c in args[1:]}
        if len(values) == 1:
            return _const(args[1].value, out)
    if all(_foldable(a) for a in args):
        return _const(_eval_now(primitive, [_scalar_of(a) for a in args], params), out)
    if len(args) == 2 and primitive.name in _IDENTITY:
        for i, ident in enumerate(_IDENTITY[primitive.name]):
            const, other = args[i], args[1 - i]
            if (ident is not None and isinstance(const, SymbolicConstant) and const.value == ident
                    and not is_implicit(other) and tuple(np.shape(other)) == tuple(out.shape)
                    and jnp.result_type(other) == out.dtype):
                return other
    return default_handler(primitive, *[_dense(a, out.shape) for a in args], **params)


@primitive_handler(SHAPE_OPS)
def _reshaped(primitive, x: SymbolicConstant, *rest, **params):
    if any(is_implicit(r) for r in rest):
        return NotImplemented
    return _const(x.value, _out(primitive, (x, *rest), params))


@primitive_handler("gather")
def _gather(primitive, x: SymbolicConstant, indices, **params):
    if is_implicit(indices) or params.get("mode") == lax.GatherScatterMode.FILL_OR_DROP:
        return NotImplemented  # out-of-bounds indices would read the fill value, not the constant
    return _const(x.value, _out(primitive, (x, indices), params))


@primitive_handler("concatenate")
def _concatenate(primitive, *xs: SymbolicConstant, **params):
    if len({(np.asarray(x.value).tobytes(), x.dtype) for x in xs}) != 1:
        return NotImplemented
    return _const(xs[0].value, _out(primitive, xs, params))


@primitive_handler("pad")
def _pad(primitive, x: SymbolicConstant, padding_value, **params):
    if not _foldable(padding_value) or _scalar(_scalar_of(padding_value)[()], x.dtype) != x.value:
        return NotImplemented
    return _const(x.value, _out(primitive, (x, padding_value), params))


def _wrap_int(value: int, dtype: np.dtype) -> Any:
    bits = np.dtype(dtype).itemsize * 8
    value %= 1 << bits
    if np.issubdtype(dtype, np.signedinteger) and value >= 1 << (bits - 1):
        value -= 1 << bits
    return np.asarray(value).astype(dtype)[()]


@primitive_handler(["reduce_sum", "reduce_prod", "reduce_max", "reduce_min", "reduce_and", "reduce_or",
                    "reduce_xor", "argmax", "argmin"])
def _reduce(primitive, x: SymbolicConstant, *, axes, **params):
    out = _out(primitive, (x,), dict(params, axes=axes))
    n = math.prod(x.shape[a] for a in axes)
    name, dtype, v = primitive.name, np.dtype(out.dtype), x.value
    if name in ("argmax", "argmin"):
        return _const(0, out)
    if n == 0:  # the reduction's identity element
        empty = np.zeros((0,), x.dtype)
        return _const(_eval_now(primitive, [empty], dict(params, axes=(0,))), out)
    if name in ("reduce_max", "reduce_min", "reduce_and", "reduce_or"):
        return _const(v, out)
    if name == "reduce_xor":
        return _const(v if n % 2 else 0, out)
    integer = np.issubdtype(dtype, np.integer)
    if name == "reduce_sum":
        value = _wrap_int(int(v) * n, dtype) if integer else np.asarray(v, np.complex128 if np.iscomplexobj(v)
                                                                        else np.float64) * n
    else:
        value = _wrap_int(pow(int(v), n, 1 << (dtype.itemsize * 8)), dtype) if integer else np.power(
            np.asarray(v, np.complex128 if np.iscomplexobj(v) else np.float64), n)
    return _const(value, out)


def _dot_constant_dense(value: Any, dense: Any, contract: tuple, batch: tuple, constant_is_lhs: bool,
                        n_lhs_free: int, out: Any) -> Any:
    """``dot_general`` of a constant and a dense operand: the dense one summed over the
    contracted axes, scaled, and broadcast into the output layout (batch, lhs free, rhs free)."""
    summed = jnp.sum(dense.astype(out.dtype), axis=tuple(contract)) if contract else dense.astype(out.dtype)
    kept = [d for d in range(jnp.ndim(dense)) if d not in contract]
    free = [d for d in kept if d not in batch]
    order = [kept.index(d) for d in batch] + [kept.index(d) for d in free]
    summed = jnp.transpose(summed, order) * jnp.asarray(value, out.dtype)
    nb = len(batch)
    start = nb + (n_lhs_free if constant_is_lhs else 0)
    dims = tuple(range(nb)) + tuple(range(start, start + len(free)))
    return lax.broadcast_in_dim(summed, tuple(out.shape), dims)


@primitive_handler("dot_general")
def _dot_left(primitive, lhs: SymbolicConstant, rhs: Union[SymbolicConstant, jax.Array], *, dimension_numbers,
              **params):
    return _dot(primitive, lhs, rhs, dimension_numbers, params)


@primitive_handler("dot_general")
def _dot_right(primitive, lhs: jax.Array, rhs: SymbolicConstant, *, dimension_numbers, **params):
    return _dot(primitive, lhs, rhs, dimension_numbers, params)


def _dot(primitive, lhs, rhs, dimension_numbers, params):
    (lc, rc), (lb, rb) = dimension_numbers
    out = _out(primitive, (lhs, rhs), dict(params, dimension_numbers=dimension_numbers))
    n_lhs_free = len(lhs.shape) - len(lc) - len(lb)
    if isinstance(lhs, SymbolicConstant) and isinstance(rhs, SymbolicConstant):
        k = math.prod(lhs.shape[d] for d in lc)
        with np.errstate(all="ignore"):
            prod = np.asarray(lhs.value).astype(out.dtype) * np.asarray(rhs.value).astype(out.dtype)
            value = (_wrap_int(int(prod) * k, np.dtype(out.dtype)) if np.issubdtype(out.dtype, np.integer)
                     else prod.astype(np.float64 if not np.iscomplexobj(prod) else np.complex128) * k)
        return _const(value, out)
    if isinstance(lhs, SymbolicConstant):
        return _dot_constant_dense(lhs.value, rhs, rc, rb, True, n_lhs_free, out)
    return _dot_constant_dense(rhs.value, lhs, lc, lb, False, n_lhs_free, out)


__all__ = ["SymbolicConstant", "astype", "broadcast_to", "symbolic_full", "symbolic_full_like", "symbolic_ones",
           "symbolic_ones_like", "symbolic_zero_like", "symbolic_zeros"]
