"""Helpers shared by the implicit-array tests (LoRA, int4)."""

import warnings
from typing import Any, Callable, Sequence

from jax import lax


def no_warnings(fn: Callable, *args: Any) -> Any:
    """``fn(*args)``, asserting that it warned nothing (no implicit array was materialized)."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = fn(*args)
    assert [str(r.message) for r in rec] == []
    return out


def strict(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with every warning (e.g. a materialization) raised as an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kwargs)


def all_eqns(jaxpr: Any):
    """Every equation of ``jaxpr`` and of its sub-jaxprs, depth first."""
    import jax

    for e in jaxpr.eqns:
        yield e
        for sub in jax.extend.core.jaxprs_in_params(e.params):
            yield from all_eqns(sub)


def dot_with_roles(roles: Sequence[str], x_dims: Sequence[tuple], on_left: bool) -> Callable:
    """A ``dot_general(x, w)`` (or ``(w, x)`` when ``on_left``) built from each weight dim's role.

    ``roles[k]`` is ``"contract"``, ``"batch"`` or ``"free"`` for weight dim ``k``;
    ``x_dims`` lists x's dims as ``(weight dim it meets or None, size)``.
    """
    pos = {k: i for i, (k, _) in enumerate(x_dims) if k is not None}
    xc = tuple(pos[k] for k, r in enumerate(roles) if r == "contract")
    wc = tuple(k for k, r in enumerate(roles) if r == "contract")
    xb = tuple(pos[k] for k, r in enumerate(roles) if r == "batch")
    wb = tuple(k for k, r in enumerate(roles) if r == "batch")
    if on_left:
        return lambda w, x: lax.dot_general(w, x, ((wc, xc), (wb, xb)))
    return lambda w, x: lax.dot_general(x, w, ((xc, wc), (xb, wb)))
