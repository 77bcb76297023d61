"""The interpreter behind ``use_implicit_args``: values are arrays, tracers or implicit arrays.

Equations without implicit inputs are re-bound unchanged. Equations with implicit inputs
go to :func:`namax.quant.handlers.dispatch`, except those holding sub-jaxprs:

- ``jit``/``closed_call``: inlined, so implicit values flow through the body;
- ``remat2``: re-entered through ``jax.checkpoint`` with implicit values flattened into
  its signature; ``cond``: through ``lax.switch``; ``scan``: through ``lax.scan`` (implicit
  ``xs`` are sliced leaf by leaf when every leaf is stacked on the scanned axis);
  ``while``: through ``lax.while_loop``. A carry (or cond output) whose implicit structure
  changes between iterations (branches) is materialized and the loop re-traced;
- anything else (``custom_jvp_call``, ``custom_vjp_call``, ``shard_map``, ...): implicit
  inputs are materialized with a warning and the equation is bound as it was.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax import lax
from jax.extend import core as jcore

from namax.interpreter import EvalInterpreter, bind_eqn, has_subjaxprs

from .handlers import dispatch, warn_materialized
from .implicit import _has_aval, _split, is_implicit, materialize_value


class _StructureChanged(Exception):
    """A loop carry or branch output changed implicit structure: retry materialized."""


def _materialize_all(name: str, values: Sequence[Any]) -> list:
    first = next((v for v in values if is_implicit(v)), None)
    if first is not None:
        warn_materialized(name, first)
    return [materialize_value(v) for v in values]


def _flatten(values: Sequence[Any]) -> tuple[list, Any]:
    return jax.tree_util.tree_flatten(list(values))


def _signature(tree: Any, leaves: Sequence[Any]) -> tuple:
    return tree, tuple((tuple(np.shape(x)), jax.numpy.result_type(x)) for x in leaves)


class ImplicitInterpreter(EvalInterpreter):
    """Evaluate a jaxpr whose values may be :class:`ImplicitArray` instances.

    >>> import jax, jax.numpy as jnp
    >>> from namax.quant.zeros import Zeros
    >>> closed = jax.make_jaxpr(lambda z, x: z * x - x)(jnp.zeros(2), jnp.ones(2))
    >>> ImplicitInterpreter().run(closed, Zeros(shape=(2,)), jnp.ones(2))  # z * x stays Zeros
    [Array([-1., -1.], dtype=float32)]
    """

    def __init__(self) -> None:
        super().__init__()
        self.rules.update({
            "jit": ImplicitInterpreter._inline, "pjit": ImplicitInterpreter._inline,
            "closed_call": ImplicitInterpreter._inline, "core_call": ImplicitInterpreter._inline,
            "remat2": ImplicitInterpreter._remat, "cond": ImplicitInterpreter._cond,
            "scan": ImplicitInterpreter._scan, "while": ImplicitInterpreter._while,
            "optimization_barrier": ImplicitInterpreter._barrier,
        })

    def eval_eqn(self, eqn: jcore.JaxprEqn, invals: list) -> list:
        if not any(is_implicit(v) for v in invals):
            return bind_eqn(eqn, invals)
        rule = self.rule_for(eqn.primitive)
        if rule is not None:
            outs = rule(self, eqn, invals)
        elif has_subjaxprs(eqn.params):
            outs = bind_eqn(eqn, _materialize_all(eqn.primitive.name, invals))
        else:
            out = dispatch(eqn.primitive, *invals, **eqn.params)
            outs = list(out) if eqn.primitive.multiple_results else [out]
        _check_outputs(eqn, outs)
        return outs

    def _barrier(self, eqn: jcore.JaxprEqn, invals: list) -> list:
        """``optimization_barrier`` is an identity: implicit operands stay implicit, their
        children go through the barrier with the dense operands."""
        return list(lax.optimization_barrier(list(invals)))

    # -- sub-jaxprs ---------------------------------------------------------------------

    def _inline(self, eqn: jcore.JaxprEqn, invals: list) -> list:
        closed = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
        if isinstance(closed, jcore.Jaxpr):
            return self.eval_jaxpr(closed, (), invals)
        return self.eval_jaxpr(closed.jaxpr, closed.consts, invals)

    def _remat(self, eqn: jcore.JaxprEqn, invals: list) -> list:
        p = eqn.params
        leaves, tree = _flatten(invals)
        box: dict = {}

        def body(*leaves: Any) -> list:
            outs = self.eval_jaxpr(p["jaxpr"], (), jax.tree_util.tree_unflatten(tree, leaves))
            out_leaves, box["tree"] = _flatten(outs)
            return out_leaves

        out = jax.checkpoint(body, prevent_cse=p["prevent_cse"], policy=p["policy"])(*leaves)
        return jax.tree_util.tree_unflatten(box["tree"], out)

    def _cond(self, eqn: jcore.JaxprEqn, invals: list) -> list:
        index, *ops = invals
        index = materialize_value(index)
        try:
            return self._switch(eqn, index, ops, materialize_outs=False)
        except _StructureChanged:
            return self._switch(eqn, index, ops, materialize_outs=True)

    def _switch(self, eqn: jcore.JaxprEqn, index: Any, ops: list, materialize_outs: bool) -> list:
        leaves, tree = _flatten(ops)
        sigs: list = []

        def branch(closed: jcore.ClosedJaxpr) -> Callable:
            def run(*leaves: Any) -> list:
                outs = self.eval_jaxpr(closed.jaxpr, closed.consts, jax.tree_util.tree_unflatten(tree, leaves))
                if materialize_outs:
                    outs = _materialize_all("cond", outs)
                out_leaves, out_tree = _flatten(outs)
                sig = _signature(out_tree, out_leaves)
                if sigs and sig != sigs[0][0]:
                    raise _StructureChanged
                sigs.append((sig, out_tree))
                return out_leaves

            return run

        out = lax.switch(index, [branch(b) for b in eqn.params["branches"]], *leaves)
        return jax.tree_util.tree_unflatten(sigs[0][1], out)

    def _scan(self, eqn: jcore.JaxprEqn, invals: list) -> list:
        p = eqn.params
        nc, nk = p["num_consts"], p["num_carry"]
        consts, init, xs = invals[:nc], invals[nc:nc + nk], invals[nc + nk:]
        xs = [x if not is_implicit(x) or _sliceable(x, p["length"]) else _materialize_all("scan", [x])[0]
              for x in xs]
        try:
            return self._scan_with(eqn, consts, init, xs, materialize_carry=False)
        except _StructureChanged:
            return self._scan_with(eqn, consts, _materialize_all("scan", init), xs, materialize_carry=True)

    def _scan_with(self, eqn: jcore.JaxprEqn, consts: list, init: list, xs: list, materialize_carry: bool) -> list:
        p = eqn.params
        closed, nk = p["jaxpr"], p["num_carry"]
        carry_leaves, carry_tree = _flatten(init)
        xs_leaves, xs_tree = _flatten(xs)
        in_sig = _signature(carry_tree, carry_leaves)

        def body(carry_leaves: list, x_leaves: list) -> tuple:
            carry = jax.tree_util.tree_unflatten(carry_tree, carry_leaves)
            x = jax.tree_util.tree_unflatten(xs_tree, x_leaves)
            outs = self.eval_jaxpr(closed.jaxpr, closed.consts, [*consts, *carry, *x])
            new_carry, ys = outs[:nk], outs[nk:]
            return _carry_leaves("scan", new_carry, in_sig, materialize_carry), _materialize_all("scan", ys)

        carry_out, ys = lax.scan(body, carry_leaves, xs_leaves, length=p["length"], reverse=p["reverse"],
                                 unroll=p["unroll"])
        return [*jax.tree_util.tree_unflatten(carry_tree, carry_out), *ys]

    def _while(self, eqn: jcore.JaxprEqn, invals: list) -> list:
        p = eqn.params
        cn, bn = p["cond_nconsts"], p["body_nconsts"]
        cconsts, bconsts, init = invals[:cn], invals[cn:cn + bn], invals[cn + bn:]
        try:
            return self._while_with(eqn, cconsts, bconsts, init, materialize_carry=False)
        except _StructureChanged:
            return self._while_with(eqn, cconsts, bconsts, _materialize_all("while", init), materialize_carry=True)

    def _while_with(self, eqn: jcore.JaxprEqn, cconsts: list, bconsts: list, init: list,
                    materialize_carry: bool) -> list:
        p = eqn.params
        cond_j, body_j = p["cond_jaxpr"], p["body_jaxpr"]
        leaves, tree = _flatten(init)
        in_sig = _signature(tree, leaves)

        def cond_fn(leaves: list) -> Any:
            carry = jax.tree_util.tree_unflatten(tree, leaves)
            (pred,) = self.eval_jaxpr(cond_j.jaxpr, cond_j.consts, [*cconsts, *carry])
            return materialize_value(pred)

        def body_fn(leaves: list) -> list:
            carry = jax.tree_util.tree_unflatten(tree, leaves)
            new = self.eval_jaxpr(body_j.jaxpr, body_j.consts, [*bconsts, *carry])
            return _carry_leaves("while", new, in_sig, materialize_carry)

        out = lax.while_loop(cond_fn, body_fn, leaves)
        return jax.tree_util.tree_unflatten(tree, out)


def _carry_leaves(loop: str, new_carry: Sequence[Any], in_sig: tuple, materialize: bool) -> list:
    """A loop body's new carry as leaves; raises :class:`_StructureChanged` if its implicit
    structure differs from the incoming one (the caller then materializes and re-traces)."""
    if materialize:
        new_carry = _materialize_all(loop, new_carry)
    leaves, tree = _flatten(new_carry)
    if _signature(tree, leaves) != in_sig:
        if materialize:
            raise TypeError(f"{loop} carry changed type inside the loop even after materializing")
        raise _StructureChanged
    return leaves


def _sliceable(x: Any, length: int) -> bool:
    """Can ``x`` be scanned over leaf by leaf (its logical shape re-inferred per slice)?"""
    if not is_implicit(x):
        return _has_aval(x) and len(x.shape) >= 1 and x.shape[0] == length
    children, _ = _split(x)
    return (bool(children) and all(getattr(x, "_inferred", (False, False))[:1])
            and len(x.shape) >= 1 and x.shape[0] == length
            and all(c is None or _sliceable(c, length) for c in children))


def _check_outputs(eqn: jcore.JaxprEqn, outs: Sequence[Any]) -> None:
    if len(outs) != len(eqn.outvars):
        raise TypeError(f"handler for {eqn.primitive.name} returned {len(outs)} values, expected {len(eqn.outvars)}")
    for v, o in zip(eqn.outvars, outs):
        want = v.aval
        shape = tuple(o.shape) if _has_aval(o) else np.shape(o)
        if hasattr(want, "shape") and tuple(want.shape) != shape:
            raise TypeError(
                f"handler for {eqn.primitive.name} returned shape {shape} ({type(o).__name__}), "
                f"but the primitive produces {tuple(want.shape)}")
        if hasattr(want, "dtype") and _has_aval(o) and np.dtype(o.dtype) != np.dtype(want.dtype):
            raise TypeError(
                f"handler for {eqn.primitive.name} returned dtype {o.dtype} ({type(o).__name__}), "
                f"but the primitive produces {want.dtype}")
