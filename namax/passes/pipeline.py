"""The pass list of :mod:`namax.driver`: implicit rewrite -> names -> sharding.

Each pass takes a :class:`~namax.driver.Program` (a jaxpr with the names of its inputs
and outputs) and returns one. The implicit pass re-traces (its program takes the implicit
arrays' parts); the names pass is an analysis (the jaxpr is unchanged, the names are
solved); the sharding pass leaves its transformation pending, so that ``namedjit``
applies it while evaluating the program into ``jax.jit``'s trace rather than tracing
the program once more.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
from jax.sharding import PartitionSpec

from ..partitioning import ResourceMapping, auto_twin
from .names import infer as solve_names
from .sharding import ShardingInterpreter, constrain, spec_or_none


class ImplicitPass:
    """Rewrite the equations that touch implicit inputs (:mod:`namax.passes.implicit`).

    >>> import jax.numpy as jnp
    >>> from namax.driver import Config, collect_inputs, trace
    >>> from namax.quant import Zeros
    >>> config = Config()
    >>> inputs = collect_inputs((Zeros(shape=(2,)), jnp.ones(2)), {}, config)
    >>> program = ImplicitPass(inputs)(trace(lambda z, x: z * x + x, inputs, config).program)
    >>> print(program.implicit_stats)
    implicit arrays: 2 use(s) rewritten (add x1, mul x1), 0 materialized
    """

    name = "implicit"

    def __init__(self, inputs: Any):
        self.inputs = inputs

    def __call__(self, program: Any) -> Any:
        from .implicit import rewrite_program

        closed, stats = rewrite_program(program.closed, self.inputs)
        in_names = self.inputs.leaf_names
        in_maps = [i.mapping for i in self.inputs.items for _ in i.leaves]
        return program.replace(jaxpr=closed, in_names=in_names, in_maps=in_maps, implicit_stats=stats)


class NamesPass:
    """Solve the names of every value (:mod:`namax.passes.names`); outputs get their solved names.

    >>> import jax.numpy as jnp
    >>> from namax.driver import Config, collect_inputs, trace
    >>> config = Config(in_axes=(("batch", "embed"), ("embed", "mlp")))
    >>> inputs = collect_inputs((jnp.ones((2, 3)), jnp.ones((3, 4))), {}, config)
    >>> NamesPass()(trace(lambda x, w: x @ w, inputs, config).program).out_names
    [('batch', 'mlp')]
    """

    name = "names"

    def __call__(self, program: Any) -> Any:
        solved = solve_names(program.closed, program.in_names)
        out_names = [given if given is not None else _plain(s) for given, s in zip(program.out_names, solved.out_names)]
        return program.replace(names=solved, out_names=out_names)


class ShardingPass:
    """Tag values with their solved names and constrain every named value to the sharding
    its names map to; inputs by their own mappings, outputs by the output mapping.

    >>> import numpy as np, jax, jax.numpy as jnp
    >>> from namax.driver import Config, collect_inputs, trace
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> config = Config(in_axes=(("batch", "embed"),), mapping={"batch": "data"}, mesh=mesh)
    >>> inputs = collect_inputs((jnp.ones((4, 3)),), {}, config)
    >>> program = ShardingPass(config)(NamesPass()(trace(jnp.sin, inputs, config).program))
    >>> # the input is constrained; sin's result inherits it (tag only); the output is constrained
    >>> [e.primitive.name for e in program.closed.eqns]
    ['sharding_constraint', 'sin', 'named_axes', 'sharding_constraint']
    """

    name = "sharding"

    def __init__(self, config: Any, paths: Optional[list] = None):
        self.config = config
        self.paths = paths
        """Per program input, where it comes from in the arguments (for error messages)."""

    def __call__(self, program: Any) -> Any:
        config = self.config
        mapping = dict(config.mapping or {})
        out_mapping = config.out_mapping if config.out_mapping is not None else mapping
        if config.names_place_values:  # constraints everywhere, in Auto mode
            place, mesh, inner_mesh = constrain, auto_twin(config.mesh), auto_twin(config.mesh)
        elif config.shards:  # explicit sharding: the code places its values, names its inputs and outputs
            place, mesh, inner_mesh = reshard, config.mesh, None
        else:  # names only: tags
            place, mesh, inner_mesh = None, None, None
        closed = program.closed
        in_names, in_maps, out_names, solved = program.in_names, program.in_maps, program.out_names, program.names

        in_paths = self.paths if self.paths is not None else [f"input {i}" for i in range(len(in_names))]

        def evaluate(closed, *values):
            if place is not None:  # inputs and outputs are placed by the user: strict
                values = [x if n is None else place(x, n, m if m is not None else mapping, mesh, f"input {p}")
                          for x, n, m, p in zip(values, in_names, in_maps, in_paths)]
            outs = ShardingInterpreter(mapping, inner_mesh, solved).run(closed, *values)
            if place is not None:
                outs = [x if n is None else place(x, n, out_mapping, mesh, f"output {i}", exact=True)
                        for i, (x, n) in enumerate(zip(outs, out_names))]
            return outs

        return program.replace(jaxpr=closed, pending=evaluate)


def reshard(x: Any, names: tuple, mapping: ResourceMapping, mesh: Any, what: str = "", exact: bool = True) -> Any:
    """``x`` resharded (``jax.sharding.reshard``, Explicit meshes) to the spec its names map to
    (strict for a value the user places: ``what`` says which, as in ``constrain``; always
    exact: a replicated spec reshards to replicated).

    >>> import numpy as np, jax, jax.numpy as jnp
    >>> from jax.sharding import AxisType
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",), axis_types=(AxisType.Explicit,))
    >>> with jax.set_mesh(mesh):
    ...     y = jax.jit(lambda x: reshard(x, ("batch", None), {"batch": "data"}, mesh))(jnp.zeros((4, 2)))
    >>> y.sharding.spec
    P('data', None)
    """
    spec = spec_or_none(names, x.shape, mapping, mesh, strict=bool(what), what=what or "value")
    current = getattr(jax.typeof(x).sharding, "spec", None)
    pad = lambda p: tuple(p) + (None,) * (len(x.shape) - len(p))
    if current is not None and pad(current) == pad(spec):
        return x
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        return jax.sharding.reshard(x, spec)


def output_specs(names: list, shapes: list, mapping: ResourceMapping, mesh: Any) -> list[PartitionSpec]:
    """Per output, the PartitionSpec its names map to (replicated where unnamed).

    >>> import numpy as np, jax
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> output_specs([("batch", "embed"), None], [(4, 2), (3,)], {"batch": "data"}, mesh)
    [P('data',), P()]
    """
    return [spec_or_none(n, s, mapping, mesh, strict=False, what="output") for n, s in zip(names, shapes)]


def _plain(names) -> Optional[tuple]:
    """``names`` if every dimension has a plain string name, else None."""
    if names is not None and all(isinstance(n, str) for n in names):
        return tuple(names)
    return None


PASSES = (ImplicitPass, NamesPass, ShardingPass)
"""The passes, in order."""
