"""Sharding inference: named values get sharding constraints from an axis mapping.

The pass is a rule table for the shared :class:`~namax.interpreter.EvalInterpreter`: every
``named_axes`` tag (so every named op's result, at every depth: inside ``scan``, ``cond``,
``jit``, ``remat`` bodies too) is followed by ``with_sharding_constraint`` to the
PartitionSpec its names map to. Dimensions whose size does not divide the mesh axis, or
that would reuse a mesh axis already taken by an earlier dimension of the same value,
stay replicated (XLA is free to choose there).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import jax
from jax.extend import core as jcore
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..interpreter import EvalInterpreter, Rule, bind_eqn
from .name_rules import ELEMENTWISE as _ELEMENTWISE_NAMES
from .names import NamesResult
from ..partitioning import ResourceMapping, auto_twin, pspec_for
from ..tag import named_axes_p, tag

ELEMENTWISE = frozenset(_ELEMENTWISE_NAMES)


def constrain(x: jax.Array, names, mapping: ResourceMapping, mesh: Mesh, what: str = "",
              exact: bool = False) -> jax.Array:
    """``x`` with a sharding constraint derived from its dimension ``names`` (no-op if
    replicated, unless ``exact``: an output the user gets back is replicated as its names say,
    not left as XLA happened to shard it).

    ``what`` names a value the user places (``"input args[0]['w']"``, ``"output 1"``): a
    size that does not divide its mesh axes, or a mesh axis used twice, is then an error
    (:class:`namax.ShardingError`); for an inferred intermediate (no ``what``) such
    dimensions stay replicated.

    >>> import numpy as np, jax, jax.numpy as jnp
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> f = lambda x: constrain(x, ("batch", "embed"), {"batch": "data"}, mesh)
    >>> jax.make_jaxpr(f)(jnp.zeros((4, 2))).eqns[0].params["sharding"].spec
    P('data',)
    >>> x = jnp.zeros(2)
    >>> constrain(x, ("embed",), {"batch": "data"}, mesh) is x  # replicated: unchanged
    True
    """
    spec = pspec_for(names, x.shape, mapping, mesh, strict=bool(what), what=what or "value")
    if not exact and not any(e is not None for e in spec):
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def sharding_rules(mapping: ResourceMapping, mesh: Mesh) -> dict[Any, Rule]:
    """Rules that add a sharding constraint after every ``named_axes`` tag.

    >>> import numpy as np, jax, jax.numpy as jnp, namax as nx
    >>> from namax.interpreter import eval_with_rules
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> closed = jax.make_jaxpr(lambda x: nx.named(x, ("batch", "embed")).array)(jnp.zeros((4, 2)))
    >>> rules = sharding_rules({"batch": "data"}, mesh)
    >>> out = jax.make_jaxpr(lambda x: eval_with_rules(closed, rules, x))(jnp.zeros((4, 2)))
    >>> [e.primitive.name for e in out.eqns]
    ['named_axes', 'sharding_constraint']
    """
    mesh = auto_twin(mesh)

    def tag_rule(interp: EvalInterpreter, eqn: jcore.JaxprEqn, invals: list) -> list:
        (out,) = bind_eqn(eqn, invals)
        if getattr(interp, "manual_depth", 0):  # inside a shard_map body values are per-device blocks
            return [out]
        return [constrain(out, eqn.params["axes"], mapping, mesh)]

    return {named_axes_p: tag_rule}


def spec_or_none(names, sizes, mapping: ResourceMapping, mesh: Mesh, strict: bool, what: str) -> PartitionSpec:
    """The PartitionSpec for a value with these names (replicated when ``names`` is None).

    >>> import numpy as np, jax
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> spec_or_none(None, (4, 2), {"batch": "data"}, mesh, strict=True, what="argument")
    P()
    >>> spec_or_none(("embed", "batch"), (2, 4), {"batch": "data"}, mesh, strict=True, what="argument")
    P(None, 'data')
    """
    if names is None:
        return PartitionSpec()
    return pspec_for(names, sizes, mapping, mesh, strict=strict, what=what)


class ShardingInterpreter(EvalInterpreter):
    """Evaluate a jaxpr adding sharding constraints (and tags) from names.

    Named code: a constraint after every ``named_axes`` tag (:func:`sharding_rules`). Plain
    code whose names the names pass solved (``names``): after every equation, its outputs
    are tagged with their inferred names (so the StableHLO and the compiled HLO read by
    name) and constrained where the mapping shards them, at every depth. With
    ``mesh=None`` only the tags are added.

    >>> import numpy as np, jax, jax.numpy as jnp, namax as nx
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> closed = jax.make_jaxpr(lambda x: nx.sum(nx.named(x, ("batch", "embed")), "embed").array)(jnp.zeros((4, 2)))
    >>> run = ShardingInterpreter({"batch": "data"}, mesh).run
    >>> [e.primitive.name for e in jax.make_jaxpr(lambda x: run(closed, x))(jnp.zeros((4, 2))).eqns]
    ['named_axes', 'sharding_constraint', 'reduce_sum', 'named_axes', 'sharding_constraint']
    """

    def __init__(self, mapping: ResourceMapping, mesh: Optional[Mesh], names: Optional[NamesResult] = None):
        mesh = None if mesh is None else auto_twin(mesh)
        super().__init__(sharding_rules(mapping, mesh) if mesh is not None else {})
        self.mapping, self.mesh, self.names = mapping, mesh, names
        self.manual_depth = 0  # > 0 inside shard_map bodies: the user placed those values by hand

    def _shard_map(self, eqn: jcore.JaxprEqn, invals: list) -> list:
        self.manual_depth += 1
        try:
            return super()._shard_map(eqn, invals)
        finally:
            self.manual_depth -= 1

    def eval_eqn(self, eqn: jcore.JaxprEqn, invals: list):
        outs = super().eval_eqn(eqn, invals)
        if self.names is None or eqn.primitive is named_axes_p:
            return outs
        inherits = self._inherits_sharding(eqn)
        return [self._name_and_constrain(v, x, constrain_it=not inherits) for v, x in zip(eqn.outvars, outs)]

    def _inherits_sharding(self, eqn: jcore.JaxprEqn) -> bool:
        """An elementwise equation whose full-shape operands carry its output's names: they
        are constrained already and XLA propagates that placement to the result, so the
        result is only tagged (a constraint per elementwise op doubled the trace)."""
        if eqn.primitive.name not in ELEMENTWISE or len(eqn.outvars) != 1:
            return False
        out = eqn.outvars[0]
        shape = getattr(out.aval, "shape", ())
        try:
            names = self.names.names_of(out)
            operands = [v for v in eqn.invars if not isinstance(v, jcore.Literal) and
                        getattr(v.aval, "shape", ()) == shape]
            return bool(operands) and all(self.names.names_of(v) == names for v in operands)
        except KeyError:
            return False

    def _name_and_constrain(self, var, x, constrain_it: bool = True):
        if isinstance(var, jcore.DropVar) or not hasattr(x, "shape") or not x.shape:
            return x
        try:
            names = self.names.names_of(var)
        except KeyError:
            return x
        if len(names) != len(x.shape) or all(n is None for n in names):
            return x
        x = tag(x, [_tag_name(n) for n in names])
        if self.mesh is None or not constrain_it or self.manual_depth:
            return x
        return constrain(x, names, self.mapping, self.mesh)


def _tag_name(name) -> Optional[str]:
    """A solved name as tag text: merged dims as ``batch*position``."""
    if name is None or isinstance(name, str):
        return name
    return "*".join("_" if n is None else str(n) for n in name)
