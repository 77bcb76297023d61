"""The pass pipeline ``namedjit`` runs while ``jax.jit`` traces it.

trace the function to a jaxpr (implicit arguments already rewritten by their handlers,
see :mod:`namax.passes.implicit`) -> solve names for plain code named on its inputs
(:mod:`namax.passes.names`) -> evaluate the jaxpr with sharding constraints and name tags
(:mod:`namax.passes.sharding`) -> named outputs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import jax
from jax.sharding import AxisType, Mesh

from ..axis import Axis
from ..named import NamedArray
from ..partitioning import ResourceMapping
from .names import infer as solve_names
from .sharding import ShardingInterpreter, constrain, spec_or_none

Names = Optional[tuple]


@dataclasses.dataclass(frozen=True)
class PassConfig:
    """What the passes need beyond the function: the mapping, the (Auto) mesh, and more."""

    mapping: ResourceMapping
    mesh: Optional[Mesh]
    out_mapping: ResourceMapping
    solve_names: bool


def explicit_context() -> bool:
    """True inside ``jax.set_mesh`` of a mesh with Explicit axes."""
    am = jax.sharding.get_abstract_mesh()
    return bool(am.axis_names) and any(t == AxisType.Explicit for t in am.axis_types)


def run(fn: Callable, leaves: list, treedef: Any, names: Sequence[Names], in_maps: Sequence[ResourceMapping],
        config: PassConfig) -> Any:
    """Trace ``fn`` on the (traced) leaves of its arguments, run the passes, return its outputs.

    ``names``/``in_maps``: per leaf, its axis names (or None) and the mapping that places it.
    Leaves that are not tracers (static values inside the arguments) stay constants.
    """
    dynamic = [i for i, x in enumerate(leaves) if isinstance(x, jax.core.Tracer)]

    def flat_fn(*dyn):
        full = list(leaves)
        for i, x in zip(dynamic, dyn):
            full[i] = x
        args, kwargs = jax.tree_util.tree_unflatten(treedef, full)
        return fn(*args, **kwargs)

    dyn_vals = [leaves[i] for i in dynamic]
    dyn_names = [names[i] for i in dynamic]
    dyn_maps = [in_maps[i] for i in dynamic]
    mesh = config.mesh
    explicit = mesh is not None and explicit_context()
    if explicit:
        # Trace in Auto mode (the eqns remember the context mesh they were traced in).
        specs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in dyn_vals]
        try:
            with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
                closed, out_shape = jax.make_jaxpr(flat_fn, return_shape=True)(*specs)
        except ValueError as e:
            if "of type Auto" not in str(e):
                raise
            # The code itself names Explicit shardings (e.g. an einsum's out_sharding):
            # respect them and place only the inputs and outputs by name.
            return _explicit_native(flat_fn, dyn_vals, dyn_names, dyn_maps, config)
    else:
        closed, out_shape = jax.make_jaxpr(flat_fn, return_shape=True)(*dyn_vals)
    out_tree = jax.tree_util.tree_structure(out_shape)
    out_names = leaf_names(out_shape)

    solved = None
    if config.solve_names:
        solved = solve_names(closed, dyn_names)
        out_names = [n if n is not None else _plain_names(s) for n, s in zip(out_names, solved.out_names)]

    def evaluate(*vals):
        if mesh is None:
            return ShardingInterpreter(config.mapping, None, solved).run(closed, *vals)
        vals = [x if n is None else constrain(x, n, m, mesh) for x, n, m in zip(vals, dyn_names, dyn_maps)]
        outs = ShardingInterpreter(config.mapping, mesh, solved).run(closed, *vals)
        return [x if n is None else constrain(x, n, config.out_mapping, mesh) for x, n in zip(outs, out_names)]

    if explicit:
        # Under an Explicit mesh, constraints only assert: run the passes in Auto mode and
        # hand the results back with the shardings their names ask for.
        specs = [spec_or_none(n, s.shape, config.out_mapping, mesh, strict=False, what="output")
                 for n, s in zip(out_names, jax.tree_util.tree_leaves(out_shape))]
        evaluate = jax.sharding.auto_axes(evaluate, out_sharding=specs)
    outs = evaluate(*dyn_vals)
    if solved is not None:
        # plain outputs whose every dimension got a name come back as NamedArrays
        outs = [_wrap_named(x, n) for x, n in zip(outs, out_names)]
    return jax.tree_util.tree_unflatten(out_tree, outs)


def _explicit_native(flat_fn: Callable, vals: list, names: Sequence[Names], maps: Sequence[ResourceMapping],
                     config: PassConfig) -> Any:
    """Under an Explicit mesh, for code with its own Explicit shardings: ``jax.sharding.reshard``
    the inputs and outputs to what their names map to; sharding-in-types does the rest."""
    vals = [x if n is None else _reshard(x, n, m, config.mesh) for x, n, m in zip(vals, names, maps)]
    out = flat_fn(*vals)
    leaves, tree = jax.tree_util.tree_flatten(out)
    out_names = leaf_names(out)
    leaves = [x if n is None else _reshard(x, n, config.out_mapping, config.mesh) for x, n in zip(leaves, out_names)]
    return jax.tree_util.tree_unflatten(tree, leaves)


def _reshard(x: Any, names: tuple, mapping: ResourceMapping, mesh: Mesh) -> Any:
    spec = spec_or_none(names, x.shape, mapping, mesh, strict=False, what="value")
    current = getattr(jax.typeof(x).sharding, "spec", None)
    if current is not None and tuple(current) + (None,) * (len(x.shape) - len(current)) == \
            tuple(spec) + (None,) * (len(x.shape) - len(spec)):
        return x
    return jax.sharding.reshard(x, spec)


def leaf_names(tree: Any) -> list[Names]:
    """One entry per array leaf of ``tree``: the axis names of its NamedArray, or None."""
    out: list[Names] = []
    for leaf in jax.tree_util.tree_leaves(tree, is_leaf=is_unit):
        if isinstance(leaf, NamedArray):
            out.extend(expand(leaf.array, leaf.axis_names))
        else:
            out.extend(expand(leaf, None))
    return out


def is_unit(x: Any) -> bool:
    """A NamedArray or an implicit array: one logical value, possibly several leaves."""
    from ..quant.implicit import is_implicit

    return isinstance(x, NamedArray) or is_implicit(x)


def expand(value: Any, names: Names) -> list[Names]:
    """Names for each array leaf of one value (an implicit array says how its parts relate to
    the dense axes: :meth:`namax.quant.ImplicitArray.child_names`)."""
    from ..quant.implicit import leaf_names_of

    return leaf_names_of(value, names)


def _plain_names(names) -> Names:
    """``names`` if every dimension has a plain string name, else None."""
    if names is not None and all(isinstance(n, str) for n in names):
        return tuple(names)
    return None


def _wrap_named(x: Any, names: Names) -> Any:
    if names is None or isinstance(x, NamedArray) or len(names) != len(getattr(x, "shape", ())):
        return x
    if len(set(names)) != len(names):
        return x
    return NamedArray(x, tuple(Axis(n, s) for n, s in zip(names, x.shape)))
