"""An evaluating interpreter: values are arrays or tracers, unknown eqns are re-bound.

Rules may rewrite any primitive (insert sharding constraints, replace a dot_general);
equations with sub-jaxprs are re-bound with each sub-jaxpr re-traced through the same
rules, so rewrites reach into ``jit``, ``scan``, ``cond``, ``while``, ``remat``,
``custom_jvp_call`` and ``custom_vjp_call`` bodies while their signatures stay the same.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import jax
from jax.extend import core as jcore
from jax.extend import source_info_util

from .core import Interpreter, Rule
from .subjaxprs import has_subjaxprs, map_subjaxprs


def bind_eqn(eqn: jcore.JaxprEqn, invals: Sequence[Any], params: Optional[Mapping[str, Any]] = None) -> list:
    """Bind ``eqn``'s primitive on ``invals`` as ``jax.core.eval_jaxpr`` does.

    >>> import jax, jax.numpy as jnp
    >>> eqn = jax.make_jaxpr(lambda x, y: x * y)(1.0, 1.0).eqns[0]
    >>> bind_eqn(eqn, [jnp.float32(3), jnp.float32(4)])
    [Array(12., dtype=float32)]
    """
    params = eqn.params if params is None else params
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(dict(params)))
    return list(out) if eqn.primitive.multiple_results else [out]


def source_context(eqn: jcore.JaxprEqn) -> Any:
    """A context in which new equations get ``eqn``'s traceback and name stack (appended
    to the current one, as ``jax.core.eval_jaxpr`` does), so user locations and
    ``jax.named_scope`` names survive a rewrite. :class:`EvalInterpreter` enters it around
    each equation's rule, whatever the rule binds.

    >>> import jax, jax.numpy as jnp
    >>> from jax.extend.core import primitives as P
    >>> def f(x):
    ...     with jax.named_scope("block"):
    ...         return jnp.sin(x)
    >>> closed = jax.make_jaxpr(f)(1.0)
    >>> cos_for_sin = EvalInterpreter({P.sin_p: lambda it, eqn, ins: [jnp.cos(ins[0])]})
    >>> eqn, = jax.make_jaxpr(lambda x: cos_for_sin.run(closed, x))(1.0).eqns
    >>> eqn.primitive.name, str(eqn.source_info.name_stack)  # the replacement keeps the scope
    ('cos', 'block')
    """
    info = eqn.source_info
    return source_info_util.user_context(info.traceback,
                                         name_stack=source_info_util.current_name_stack() + info.name_stack)


class EvalInterpreter(Interpreter):
    """Evaluate a jaxpr, applying ``rules`` and re-binding everything else.

    >>> import jax, jax.numpy as jnp
    >>> from jax.extend.core import primitives as P
    >>> double_sin = {P.sin_p: lambda it, eqn, ins: [2 * jnp.sin(ins[0])]}
    >>> f = lambda x: jax.jit(jnp.sin)(x)
    >>> float(EvalInterpreter(double_sin).run(jax.make_jaxpr(f)(0.5), 0.5)[0]) == float(2 * jnp.sin(0.5))
    True
    """

    def __init__(self, rules: Optional[Mapping[Any, Rule]] = None):
        super().__init__(rules, default=EvalInterpreter.default_rule)

    def eqn_context(self, eqn: jcore.JaxprEqn) -> Any:
        """Every equation a rule binds gets the user's source info and name stack."""
        return source_context(eqn)

    def default_rule(self, eqn: jcore.JaxprEqn, invals: list) -> list:
        """Re-bind ``eqn``; sub-jaxprs are re-traced through this interpreter first."""
        if eqn.primitive.name == "shard_map":
            return self._shard_map(eqn, invals)
        params = eqn.params
        if self.rules and has_subjaxprs(params):
            params = map_subjaxprs(params, self.retrace)
        return bind_eqn(eqn, invals, params)

    def retrace(self, closed: jcore.ClosedJaxpr) -> jcore.ClosedJaxpr:
        """``closed`` re-traced through this interpreter; same signature, rules applied."""
        specs = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None))
                 if hasattr(a, "shape") else a for a in closed.in_avals]
        try:
            return jax.make_jaxpr(lambda *a: self.run(closed, *a))(*specs)
        except TypeError:
            specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in closed.in_avals]
            return jax.make_jaxpr(lambda *a: self.run(closed, *a))(*specs)

    def _shard_map(self, eqn: jcore.JaxprEqn, invals: list) -> list:
        # Bodies with collectives only trace inside a shard_map: re-enter the public API.
        p = eqn.params
        body = p["jaxpr"]
        fn = jax.shard_map(
            lambda *a: tuple(self.eval_jaxpr(body, (), a)),
            mesh=p["mesh"], in_specs=tuple(p["in_specs"]), out_specs=tuple(p["out_specs"]),
            axis_names=set(p["manual_axes"] if "manual_axes" in p else p["newly_manual_axes"]),
            check_vma=p["check_vma"],
        )
        return list(fn(*invals))


def eval_with_rules(closed: jcore.ClosedJaxpr, rules: Mapping[Any, Rule], *args: Any) -> list:
    """Evaluate ``closed`` on ``args`` with ``rules`` applied at every depth.

    >>> import jax, jax.numpy as jnp
    >>> from jax.extend.core import primitives as P
    >>> closed = jax.make_jaxpr(lambda x: jax.jit(lambda y: y * 3.0)(x) + 1.0)(1.0)
    >>> out, = eval_with_rules(closed, {P.mul_p: lambda it, eqn, ins: [ins[0] + ins[1]]}, 2.0)
    >>> float(out)  # (2 + 3) + 1: the rule replaced the * inside the jit
    6.0
    """
    return EvalInterpreter(rules).run(closed, *args)
