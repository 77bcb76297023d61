"""The implicit-array pass: LoRA, int4 and Zeros inputs, rewritten into plain equations.

The function was traced on the implicit inputs' dense logical values (it never sees an
implicit array). This pass interprets that jaxpr with the real implicit values
(:class:`namax.quant.interpret.ImplicitInterpreter`), so every handler fires (a LoRA
``dot_general`` becomes ``x w + (x a) b^T``; an int4 one a dot with in-program
dequantisation), and traces the result: a plain jaxpr over the implicit arrays' parts,
on which the names and sharding passes then run unchanged. It counts what it did: uses
rewritten by a handler, uses materialized for lack of one.

The ``named_axes`` tag passes implicit values through untouched: naming a LoRA weight must
not materialize it.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import jax
from jax.extend import core as jcore

from ..quant.handlers import primitive_handler, recording_materializations
from ..quant.implicit import ImplicitArray, is_implicit, materialize_value
from ..quant.interpret import ImplicitInterpreter
from ..tag import named_axes_p


@primitive_handler(named_axes_p)
def _tag_implicit(primitive, x: ImplicitArray, *, axes):
    """A tag on an implicit value: the value is unchanged, so is its representation."""
    return x


@dataclasses.dataclass
class ImplicitStats:
    """Equations with implicit operands: handled by a rule (rewritten) or materialized.

    >>> from collections import Counter
    >>> print(ImplicitStats(Counter(dot_general=2), Counter({("exp", "LoraWeight"): 1})))
    implicit arrays: 2 use(s) rewritten (dot_general x2), 1 materialized (exp of LoraWeight x1)
    """

    rewritten: Counter = dataclasses.field(default_factory=Counter)  # primitive -> count
    materialized: Counter = dataclasses.field(default_factory=Counter)  # (primitive, class) -> count

    def __str__(self) -> str:
        line = f"implicit arrays: {sum(self.rewritten.values())} use(s) rewritten"
        if self.rewritten:
            line += " (" + ", ".join(f"{k} x{v}" for k, v in sorted(self.rewritten.items())) + ")"
        line += f", {sum(self.materialized.values())} materialized"
        if self.materialized:
            line += " (" + ", ".join(f"{k} of {c} x{v}" for (k, c), v in sorted(self.materialized.items())) + ")"
        return line


class _Counting(ImplicitInterpreter):
    """The implicit interpreter, counting the equations that had implicit operands."""

    def __init__(self, stats: ImplicitStats):
        super().__init__()
        self.stats = stats

    def eval_eqn(self, eqn: jcore.JaxprEqn, invals: list) -> list:
        if not any(is_implicit(v) for v in invals):
            return super().eval_eqn(eqn, invals)
        before = sum(self.stats.materialized.values())
        outs = super().eval_eqn(eqn, invals)
        if sum(self.stats.materialized.values()) == before and eqn.primitive.name not in self.rules:
            self.stats.rewritten[eqn.primitive.name] += 1
        return outs


def rewrite_program(closed: jcore.ClosedJaxpr, inputs: Any) -> tuple[jcore.ClosedJaxpr, ImplicitStats]:
    """``closed`` (one input per logical value) as a jaxpr over the inputs' leaves, with
    every implicit use handled; implicit outputs are materialized (the function returned
    dense values).

    >>> import jax, jax.numpy as jnp
    >>> from namax.driver import Config, collect_inputs
    >>> from namax.quant import Zeros
    >>> inputs = collect_inputs((Zeros(shape=(2,)), jnp.ones(2)), {}, Config())
    >>> closed, stats = rewrite_program(jax.make_jaxpr(lambda z, x: z * x + x)(jnp.zeros(2), jnp.ones(2)), inputs)
    >>> len(closed.in_avals), [e.primitive.name for e in closed.eqns], dict(stats.rewritten)  # 0 * x + x is x
    (1, [], {'mul': 1, 'add': 1})
    """
    stats = ImplicitStats()
    interpreter = _Counting(stats)

    def run(*leaves: Any) -> list:
        values = inputs.values_from_leaves(leaves)
        with recording_materializations(stats.materialized):
            outs = interpreter.run(closed, *values)
        return [materialize_value(x) for x in outs]

    specs = [jax.ShapeDtypeStruct(jax.typeof(x).shape, jax.typeof(x).dtype) for x in inputs.leaves]
    return jax.make_jaxpr(run)(*specs), stats


__all__ = ["ImplicitStats", "rewrite_program"]
