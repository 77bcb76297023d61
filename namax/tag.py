"""The ``named_axes`` primitive: an identity that records axis names in the jaxpr.

Every named op tags its result with it, so ``jax.make_jaxpr`` of named code shows
``named_axes[axes=('batch', 'embed')]``. It differentiates (cotangents get tagged too),
batches under ``vmap`` (the vmapped dim gets the vmap axis name, or ``None``) and lowers
to an identity ``stablehlo.convert`` carrying ``mhlo.frontend_attributes = {named_axes =
"batch,embed"}``; XLA folds the convert away and moves the attribute onto the op that
produced the value, so the compiled program is unchanged but readable by name.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
from jax.extend.core import Primitive
from jax.extend.mlir import ir, lower_with_sharding_in_types
from jax.extend.mlir.dialects import stablehlo as hlo
from jax.interpreters import ad, batching, mlir

named_axes_p = Primitive("named_axes")
"""The tag primitive. Param ``axes``: a tuple with one name (or ``None``) per dimension."""

UNNAMED = "_"
"""How an unnamed dimension is written in the StableHLO attribute."""

ATTRIBUTE = "named_axes"
"""The frontend attribute key that carries the names."""


def tag(x: jax.Array, axes: Sequence[Optional[str]]) -> jax.Array:
    """Tag ``x`` with one axis name per dimension; returns ``x`` unchanged in value.

    >>> import jax.numpy as jnp
    >>> tag(jnp.ones((2, 3)), ("batch", "embed")).shape
    (2, 3)
    """
    axes = tuple(axes)
    for a in axes:
        if a is not None and not (isinstance(a, str) and a):
            raise TypeError(f"tag: axis names must be non-empty strings or None, got {a!r} in {axes}")
    if not isinstance(x, jax.Array):
        x = jax.numpy.asarray(x)
    if len(axes) != x.ndim:
        raise ValueError(f"tag: {len(axes)} names {axes} for an array of shape {x.shape}")
    return named_axes_p.bind(x, axes=axes)


def _impl(x, *, axes):
    return x


def _abstract_eval(aval, *, axes):
    return aval


def _transpose(ct, x, *, axes):
    return [named_axes_p.bind(ct, axes=axes)]


def _batch(axis_data, args, dims, *, axes):
    (x,), (d,) = args, dims
    if d is None:
        return named_axes_p.bind(x, axes=axes), None
    name = axis_data.name if isinstance(axis_data.name, str) else None
    return named_axes_p.bind(x, axes=axes[:d] + (name,) + axes[d:]), d


def attribute_text(axes: Sequence[Optional[str]]) -> str:
    """The attribute value for ``axes``: names joined by commas, ``_`` for unnamed.

    >>> attribute_text(("batch", None, "embed"))
    'batch,_,embed'
    """
    return ",".join(UNNAMED if a is None else a for a in axes)


def _lower(ctx, x, *, axes):
    aval_out = ctx.avals_out[0]
    op = hlo.ConvertOp(mlir.aval_to_ir_type(ctx.module_context, aval_out), x)
    op.attributes["mhlo.frontend_attributes"] = ir.DictAttr.get(
        {ATTRIBUTE: ir.StringAttr.get(attribute_text(axes))}
    )
    return [lower_with_sharding_in_types(ctx, op.result, aval_out)]


named_axes_p.def_impl(_impl)
named_axes_p.def_abstract_eval(_abstract_eval)
ad.deflinear2(named_axes_p, _transpose)
batching.fancy_primitive_batchers[named_axes_p] = _batch
# cacheable=False: the identity convert is emitted inline; a cacheable rule is emitted as a
# private function per (names, type) plus a call, which cost ~20% of the named GPT block's lowering
mlir.register_lowering(named_axes_p, _lower, cacheable=False)
