"""Qax-style example programs, run on namax's implicit-array engine (``namax.quant``).

Each section is written the way a Qax user writes it (``from namax.quant import ...`` in
place of ``from qax import ...``): symbolic zeros, an implicit constant, an identity
matrix, a minimal LoRA, two implicit types combined, nesting, nullable arrays and
``qax.symbols``. ``main()`` prints, for each, the largest absolute difference between the
implicit computation and the same computation on dense arrays.

Run: ``python examples/qax_examples.py``.
"""

from __future__ import annotations

import warnings
from dataclasses import InitVar, dataclass
from functools import partial
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np

import namax.quant as qax
from namax.quant import (ArrayValue, ImplicitArray, aux_field, default_handler, primitive_handler,
                         use_implicit_args)
from namax.quant.nullable import NullableArray
from namax.quant.symbols import SymbolicConstant


def max_diff(a, b) -> float:
    """Largest absolute difference of two (possibly implicit) arrays."""
    a, b = qax.materialize_nested(a, full=True), qax.materialize_nested(b, full=True)
    return float(jnp.max(jnp.abs(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32))))


# -- 1. symbolic zeros --------------------------------------------------------------------------

class ImplicitZeros(ImplicitArray):
    default_dtype = jnp.float32

    def materialize(self):
        return jnp.zeros(self.shape, dtype=self.dtype)


def binop_shape_dtype(x, y):
    return {"shape": jnp.broadcast_shapes(x.shape, y.shape), "dtype": jnp.result_type(x.dtype, y.dtype)}


@primitive_handler(jax.lax.mul_p)
def do_mul(primitive, x: ImplicitZeros, y: jax.Array):
    return ImplicitZeros(**binop_shape_dtype(x, y))


@primitive_handler([jax.lax.add_p, jax.lax.mul_p])
def handle_both_implicit(primitive, x: ImplicitZeros, y: ImplicitZeros):
    return ImplicitZeros(**binop_shape_dtype(x, y))


@primitive_handler(jax.lax.add_p)
def handle_add_general(primitive, x: ImplicitZeros, y: jax.Array):
    shape_dtype = binop_shape_dtype(x, y)
    return jnp.broadcast_to(y, shape_dtype["shape"]).astype(shape_dtype["dtype"])


def zeros_program(x, y):
    z = x + y
    w = z * jnp.ones_like(z)
    a = jnp.sum(w)  # no reduce_sum handler: materializes (with a warning)
    return w + a


def example_zeros():
    zeros = ImplicitZeros(shape=(2, 3))
    f = jax.jit(use_implicit_args(zeros_program))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        implicit = f(zeros, zeros)
        mixed = f(zeros, jnp.ones(zeros.shape))
    dense = zeros_program(jnp.zeros((2, 3)), jnp.zeros((2, 3)))
    dense_mixed = zeros_program(jnp.zeros((2, 3)), jnp.ones((2, 3)))
    return {"zeros": max_diff(implicit, dense), "zeros (mixed)": max_diff(mixed, dense_mixed)}


# -- 2. an implicit constant ------------------------------------------------------------------------

@dataclass
class ImplicitConst(ImplicitArray):
    value: ArrayValue
    my_aux_value: str = aux_field(default="some_metadata")

    default_dtype = jnp.float32

    def compute_dtype(self):
        return jnp.result_type(self.value)  # Qax's example: jax.core.get_aval(self.value).dtype

    def materialize(self):
        return jnp.full(self.shape, self.value, dtype=self.dtype)


@primitive_handler("mul")
def const_mul(primitive, a: ImplicitConst, b: jax.Array):
    out_shape = jnp.broadcast_shapes(a.shape, b.shape)
    if b.size == 1:
        return ImplicitConst(a.value * b.reshape(1)[0], shape=out_shape)
    return jnp.broadcast_to(b * a.value, out_shape)


@primitive_handler("mul")
def const_mul_const(primitive, a: ImplicitConst, b: ImplicitConst):
    return ImplicitConst(a.value * b.value, shape=jnp.broadcast_shapes(a.shape, b.shape))


@primitive_handler(["sin", "cos", "exp"])
def const_unop(primitive, arg: ImplicitConst):
    # written for an older JAX: no ``accuracy`` parameter anywhere
    return ImplicitConst(default_handler(primitive, arg.value), shape=arg.shape)


@primitive_handler(jax.lax.reduce_sum_p)
def const_reduce_sum(primitive, a: ImplicitConst, *, axes):
    total = np.prod([a.shape[i] for i in axes]) * a.value
    return ImplicitConst(total, shape=tuple(d for i, d in enumerate(a.shape) if i not in axes))


def const_program(a, b):
    return jnp.sum(jnp.sin(a * b))


def example_const():
    shape = (5, 7)
    f = use_implicit_args(const_program)
    dense = const_program(jnp.full(shape, 3.0), jnp.full(shape, 2.0))
    implicit = f(ImplicitConst(3.0, shape=shape), ImplicitConst(2.0, shape=shape))
    mixed = f(ImplicitConst(3.0, shape=shape), jnp.full(shape, 2.0))
    nested = f(ImplicitConst(3.0, shape=shape), ImplicitConst(value=ImplicitConst(2.0, shape=()), shape=shape))
    return {"const": max_diff(implicit, dense), "const (mixed)": max_diff(mixed, dense),
            "const (nested)": max_diff(nested, dense)}


# -- 3. a minimal LoRA ------------------------------------------------------------------------------

@dataclass
class LoraMatrix(ImplicitArray):
    """W + A B^T"""
    W: ArrayValue
    A: ArrayValue
    B: ArrayValue

    def materialize(self):
        return self.W + self.A @ self.B.T


@primitive_handler("dot_general")
def lora_dot(primitive, x: jax.Array, w: LoraMatrix, *, dimension_numbers, **kwargs):
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    if not (len(w.shape) == 2 and lhs_contract == (x.ndim - 1,) and rhs_contract == (0,)
            and lhs_batch == () and rhs_batch == ()):
        return NotImplemented
    kwargs = {**kwargs, "dimension_numbers": dimension_numbers}
    result = default_handler(primitive, x, w.W, **kwargs)
    xa = default_handler(primitive, x, w.A, **kwargs)
    return result + default_handler(primitive, xa, w.B.T, **kwargs)


def mlp(params, x):
    for w in params:
        x = jax.nn.relu(x @ w)
    return jnp.sum(x)


def example_lora():
    keys = jax.random.split(jax.random.PRNGKey(0), 7)
    ws = [jax.random.normal(keys[i], (16, 16)) / 4 for i in range(3)]
    lora = [LoraMatrix(w, jax.random.normal(keys[3 + i], (16, 2)) / 4, jax.random.normal(keys[6], (16, 2)) / 4)
            for i, w in enumerate(ws)]
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 16))
    implicit = use_implicit_args(mlp)(lora, x)
    dense = mlp([w.W + w.A @ w.B.T for w in lora], x)
    return {"lora": max_diff(implicit, dense)}


# -- 4. an identity matrix (and LoRA over it: nesting) ----------------------------------------------

@dataclass
class Eye(ImplicitArray):
    dim: InitVar[int]

    def __init__(self, dim, dtype=jnp.float32):
        super().__init__(shape=(dim, dim), dtype=dtype)

    def materialize(self):
        return jnp.eye(self.shape[0], dtype=self.dtype)


@primitive_handler(jax.lax.dot_general_p)
def eye_dot(primitive, lhs: Union[Eye, jax.Array], rhs: Union[Eye, jax.Array], *, dimension_numbers, **kwargs):
    out_aval = jax.eval_shape(partial(default_handler, primitive, dimension_numbers=dimension_numbers, **kwargs),
                              lhs.aval, rhs.aval)  # Qax's example: jax.core.get_aval(lhs), ...
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    if not (1 <= lhs.aval.ndim <= 2 and rhs.aval.ndim <= 2 and len(lhs_contract) == len(rhs_contract) == 1
            and lhs_batch == rhs_batch == ()):
        return NotImplemented
    if isinstance(lhs, Eye) and isinstance(rhs, Eye):
        return Eye(out_aval.shape[0], dtype=out_aval.dtype)
    return (rhs if isinstance(lhs, Eye) else lhs).astype(out_aval.dtype)


def example_identity():
    f = use_implicit_args(lambda a, b: a @ b)
    x = jnp.arange(39, dtype=jnp.float32).reshape(3, 13)
    out = {"identity": max_diff(f(Eye(3), x), jnp.eye(3) @ x)}
    dim, rank = 32, 4
    eye_plus_low_rank = LoraMatrix(W=Eye(dim), A=jax.random.normal(jax.random.PRNGKey(0), (dim, rank)),
                                   B=jax.random.normal(jax.random.PRNGKey(2), (dim, rank)))
    x = jax.random.normal(jax.random.PRNGKey(1), (8, dim))
    dense = x @ (jnp.eye(dim) + eye_plus_low_rank.A @ eye_plus_low_rank.B.T)
    out["identity (LoRA over Eye)"] = max_diff(f(x, eye_plus_low_rank), dense)
    return out


# -- 5. combining two implicit types -----------------------------------------------------------------

_COMBINED: list = []


def register_combined_handler():
    """Teach ``mul`` that zeros times a constant is zeros (once)."""
    if _COMBINED:
        return

    @primitive_handler("mul")
    def heterogenous_handler(primitive, x: ImplicitZeros, y: ImplicitConst):  # either order: mul commutes
        return ImplicitZeros(shape=jnp.broadcast_shapes(x.shape, y.shape), dtype=jnp.result_type(x.dtype, y.dtype))

    _COMBINED.append(heterogenous_handler)


def example_combining():
    f = use_implicit_args(lambda x, y: x * y)
    shape = (2, 3)
    zeros, const = ImplicitZeros(shape=shape, dtype=jnp.float32), ImplicitConst(1.0, shape=shape)
    out = {}
    if not _COMBINED:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            before = f(const, zeros)  # no handler for the pair yet: materialized, a dense array
        assert isinstance(before, jax.Array)
        out["combining (before)"] = max_diff(before, jnp.zeros(shape))
    register_combined_handler()
    after = f(const, zeros)
    assert isinstance(after, ImplicitZeros)
    out["combining"] = max_diff(after, jnp.zeros(shape))
    return out


# -- 6. nesting and nullable arrays ------------------------------------------------------------------

def nullable_program(x, y):
    return jnp.sum(-x * y, axis=0)


def example_nullable():
    x = NullableArray(val=jnp.ones((2, 3)), mask=jnp.asarray([[True, False, True], [False, True, True]]))
    y = NullableArray(val=jnp.full((2, 3), 3.0), mask=jnp.asarray([[False, True, True], [True, True, True]]))
    out = jax.jit(use_implicit_args(nullable_program))(x, y)
    mask_diff = float(jnp.sum(out.mask != jnp.all(x.mask & y.mask, axis=0)))
    return {"nullable (values)": max_diff(out.val, nullable_program(x.val, y.val)), "nullable (mask)": mask_diff}


def nesting_program(x, y):
    return (x * y) + 3


def example_nesting():
    shape = (2, 3)
    x = NullableArray(val=ImplicitZeros(shape=shape), mask=jnp.asarray([[True, False, True], [False, True, True]]))
    y = NullableArray(val=jnp.ones(shape), mask=jnp.asarray([[True, True, True], [False, False, True]]))
    out = jax.jit(use_implicit_args(nesting_program))(x, y)
    return {"nesting (values)": max_diff(out.val, nesting_program(jnp.zeros(shape), jnp.ones(shape))),
            "nesting (mask)": float(jnp.sum(out.mask != (x.mask & y.mask)))}


# -- 7. qax.symbols ------------------------------------------------------------------------------------

def symbols_program(c, x):
    return jnp.sum(jnp.exp(c * c + 1.0), axis=0) + x @ c


def example_symbols():
    c = SymbolicConstant(0.5, shape=(4, 4), dtype=jnp.float32)
    x = jnp.arange(8.0).reshape(2, 4)
    return {"symbols": max_diff(qax.quaxify(symbols_program)(c, x), symbols_program(c.materialize(), x))}


EXAMPLES = [example_zeros, example_const, example_lora, example_identity, example_combining, example_nullable,
            example_nesting, example_symbols]


def run_all() -> dict:
    """``{example: max |implicit - dense|}`` for every example."""
    out = {}
    for example in EXAMPLES:
        out.update(example())
    return out


def main() -> None:
    for name, diff in run_all().items():
        print(f"{name:28s} max |implicit - dense| = {diff:.3g}")


if __name__ == "__main__":
    main()
