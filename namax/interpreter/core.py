"""One small jaxpr interpreter, modelled on ``jax.core.eval_jaxpr``.

An :class:`Interpreter` walks a jaxpr with an environment from vars to values and hands
each equation to a rule looked up by primitive. What a "value" is belongs to the user of
the interpreter: concrete arrays or tracers (evaluation and rewriting passes, implicit
arrays) or abstract facts about a var (the names pass). Rules receive the interpreter
itself, so a rule for a primitive with sub-jaxprs (``jit``, ``scan``, ``cond``, ...)
recurses with :meth:`Interpreter.eval_jaxpr`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping, MutableMapping, Optional, Sequence

from jax.extend import core as jcore

Rule = Callable[["Interpreter", jcore.JaxprEqn, list], Sequence[Any]]
"""``rule(interpreter, eqn, invals) -> outvals`` (a list, one value per outvar)."""


class Interpreter:
    """Walk jaxprs, dispatching each equation to a per-primitive rule.

    ``rules`` maps a Primitive (or a primitive's name) to a :data:`Rule`;
    ``default`` handles every other equation. ``literal`` turns a
    :class:`jax.extend.core.Literal` into a value of this interpreter's domain.

    >>> import jax, jax.numpy as jnp
    >>> count = Interpreter(default=lambda it, eqn, ins: [eqn.primitive.name] * len(eqn.outvars))
    >>> count.run(jax.make_jaxpr(lambda x: jnp.sin(x) * 2)(1.0), "x")
    ['mul']
    """

    def __init__(self, rules: Optional[Mapping[Any, Rule]] = None, default: Optional[Rule] = None,
                 literal: Optional[Callable[[jcore.Literal], Any]] = None):
        self.rules: dict[Any, Rule] = dict(rules or {})
        self._default = default
        self._literal = literal or (lambda lit: lit.val)

    def rule_for(self, primitive: jcore.Primitive) -> Optional[Rule]:
        """The rule registered for ``primitive`` (by object, then by name), or None."""
        rule = self.rules.get(primitive)
        if rule is None:
            rule = self.rules.get(primitive.name)
        return rule

    def run(self, closed: jcore.ClosedJaxpr, *args: Any) -> list:
        """Evaluate a ClosedJaxpr on ``args``; its consts enter as literal values."""
        consts = [self.const(c) for c in closed.consts]
        return self.eval_jaxpr(closed.jaxpr, consts, args)

    def const(self, value: Any) -> Any:
        """How a ClosedJaxpr's constant enters the environment (identity by default)."""
        return value

    def eval_jaxpr(self, jaxpr: jcore.Jaxpr, consts: Sequence[Any], args: Sequence[Any]) -> list:
        """Evaluate an open jaxpr: bind constvars and invars, run every eqn, read outvars."""
        env: dict[jcore.Var, Any] = {}
        if len(args) != len(jaxpr.invars):
            raise TypeError(f"jaxpr takes {len(jaxpr.invars)} arguments, got {len(args)}")
        if len(consts) != len(jaxpr.constvars):
            raise TypeError(f"jaxpr takes {len(jaxpr.constvars)} constants, got {len(consts)}")
        for v, x in zip(jaxpr.constvars, consts):
            env[v] = x
        for v, x in zip(jaxpr.invars, args):
            env[v] = x
        for eqn in jaxpr.eqns:
            invals = [self.read(env, v) for v in eqn.invars]
            with self.eqn_context(eqn):
                outvals = self.eval_eqn(eqn, invals)
            if len(outvals) != len(eqn.outvars):
                raise RuntimeError(
                    f"rule for {eqn.primitive.name} returned {len(outvals)} values for {len(eqn.outvars)} outputs"
                )
            for v, x in zip(eqn.outvars, outvals):
                self.write(env, v, x)
        return [self.read(env, v) for v in jaxpr.outvars]

    def eqn_context(self, eqn: jcore.JaxprEqn) -> Any:
        """A context entered around each equation's rule (none by default)."""
        return contextlib.nullcontext()

    def read(self, env: Mapping, v: Any) -> Any:
        if isinstance(v, jcore.Literal):
            return self._literal(v)
        return env[v]

    def write(self, env: MutableMapping, v: Any, x: Any) -> None:
        if isinstance(v, jcore.DropVar):
            return
        env[v] = x

    def eval_eqn(self, eqn: jcore.JaxprEqn, invals: list) -> Sequence[Any]:
        """Dispatch one equation to its rule (or the default rule)."""
        rule = self.rule_for(eqn.primitive) or self._default
        if rule is None:
            raise LookupError(f"{type(self).__name__} has no rule for primitive {eqn.primitive.name} "
                              "and no default rule")
        return rule(self, eqn, invals)
