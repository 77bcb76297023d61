"""Find and replace the sub-jaxprs held in an equation's params.

Where jax 0.10 keeps them: ``jit``/``closed_call``/``scan``/``custom_*_call``/``while``
hold ClosedJaxprs under ``jaxpr``/``call_jaxpr``/``cond_jaxpr``/``body_jaxpr``; ``cond``
holds a tuple under ``branches``; ``remat2`` and ``shard_map`` hold an open Jaxpr;
``custom_linear_solve`` a namedtuple of ClosedJaxprs (entries may be None).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from jax.extend import core as jcore

ClosedFn = Callable[[jcore.ClosedJaxpr], jcore.ClosedJaxpr]


def has_subjaxprs(params: Mapping[str, Any]) -> bool:
    """True if any param holds a (closed or open) jaxpr.

    >>> import jax, jax.numpy as jnp
    >>> eqns = jax.make_jaxpr(lambda x: jax.jit(jnp.sin)(x) * 2)(1.0).eqns
    >>> [(e.primitive.name, has_subjaxprs(e.params)) for e in eqns]
    [('jit', True), ('mul', False)]
    """
    return any(True for _ in jcore.jaxprs_in_params(params))


def map_subjaxprs(params: Mapping[str, Any], fn: ClosedFn) -> dict[str, Any]:
    """Params with every sub-jaxpr replaced by ``fn(closed)``; open jaxprs stay open.

    >>> import jax, jax.numpy as jnp
    >>> eqn = jax.make_jaxpr(lambda x: jax.jit(jnp.sin)(x))(1.0).eqns[0]
    >>> seen = []
    >>> params = map_subjaxprs(eqn.params, lambda c: seen.append(c.eqns[0].primitive.name) or c)
    >>> seen, params["jaxpr"] is eqn.params["jaxpr"]
    (['sin'], True)
    """
    out = {}
    for k, v in params.items():
        if isinstance(v, jcore.ClosedJaxpr):
            out[k] = fn(v)
        elif isinstance(v, jcore.Jaxpr):
            new = fn(jcore.ClosedJaxpr(v, ()))
            if new.consts:
                raise ValueError(f"rewriting the open jaxpr in param {k!r} introduced constants")
            out[k] = new.jaxpr
        elif isinstance(v, tuple) and any(isinstance(b, (jcore.ClosedJaxpr, jcore.Jaxpr)) for b in v):
            items = [fn(b) if isinstance(b, jcore.ClosedJaxpr) else b for b in v]
            out[k] = type(v)(*items) if hasattr(v, "_fields") else tuple(items)
        else:
            out[k] = v
    return out
