"""The one call path: name the inputs, trace once, run the pass list, evaluate.

Every entry point goes through here: :func:`namax.namedjit` (call, ``.lower()``,
``.trace()``), :func:`namax.infer_names`, :func:`namax.dump` and ``dump-hlo``::

    inputs  = collect_inputs(args, kwargs, config)     # names, mappings, implicit values
    program = trace(fn, inputs, config)                 # fn runs ONCE, on dense logical values
    for p in passes(config, inputs):                    # implicit -> names -> sharding
        program = p(program)                            # each: Program (a jaxpr) in, Program out
        hook(p.name, program)                           # what dump-hlo records
    outputs = program.evaluate(leaves of inputs)        # re-binds every eqn with its source info

A pass may leave its transformation *pending*: the program then holds the jaxpr it started
from and an evaluator; the transformed jaxpr is built only when asked for
(:attr:`Program.closed`: the next pass or a hook), and otherwise applied while evaluating,
so ``namedjit`` traces the program once more at most.

Implicit arrays (LoRA, int4, zeros) enter the function as dense logical arrays, always
(``implicit="dense"``); the implicit pass then rewrites the equations that touch them.
``implicit="pytree"`` hands them to the function as they are (its parts traced), for code
that calls :func:`namax.quant.use_implicit_args` itself.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import jax
from jax.extend import core as jcore
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from .arguments import is_array, wrap_static_outputs
from .axis import Axis
from .interpreter import EvalInterpreter
from .named import NamedArray
from .naming import is_unit, value_names
from .partitioning import ResourceMapping, auto_twin
from .passes.pipeline import ImplicitPass, NamesPass, ShardingPass, output_specs
from .passes.sharding import spec_or_none
from .quant.implicit import is_implicit, leaf_names_of

Names = Optional[tuple]
InAxisResources = Union[None, ResourceMapping, Mapping[int, ResourceMapping]]
IMPLICIT_MODES = ("dense", "pytree")


@dataclasses.dataclass(frozen=True, eq=False)
class Config:
    """What the passes need beyond the function and its arguments.

    ``mapping`` and ``mesh``: the compute axis mapping and the mesh it refers to (the
    sharding pass runs when both are set). ``in_axis_resources``: a mapping for the inputs,
    or ``{argnum: mapping}``; ``out_mapping``: the mapping that places outputs.
    ``in_axes``: names for plain arrays (the names pass then solves every value's names).
    ``out_axes="infer"``: plain outputs whose every dim got a name come back as NamedArrays.
    ``explicit_sharding``: under an Explicit mesh, trace with JAX's sharding-in-types (the
    code places its own values; names place only inputs and outputs) instead of by names.
    """

    in_axes: Optional[Sequence[Any]] = None
    mapping: Optional[ResourceMapping] = None
    mesh: Optional[Mesh] = None
    in_axis_resources: InAxisResources = None
    out_mapping: Optional[ResourceMapping] = None
    implicit: str = "dense"
    out_axes: Optional[str] = None
    explicit_sharding: bool = False

    def __post_init__(self):
        if self.implicit not in IMPLICIT_MODES:
            raise ValueError(f"implicit={self.implicit!r}: choose one of {IMPLICIT_MODES}")
        if self.out_axes not in (None, "infer"):
            raise ValueError(f"out_axes={self.out_axes!r}: choose None (outputs as the function returns them) "
                             "or 'infer' (plain outputs whose dims all got names come back as NamedArrays)")

    @property
    def shards(self) -> bool:
        """True if the sharding pass runs (a mapping and a mesh)."""
        return self.mesh is not None and self.mapping is not None

    @property
    def solves_names(self) -> bool:
        return self.in_axes is not None or self.out_axes == "infer"

    @property
    def names_place_values(self) -> bool:
        """Trace in Auto mode and let the names decide every sharding (the default)."""
        return self.shards and not (self.explicit_sharding and _has_explicit_axes(self.mesh))


def _has_explicit_axes(mesh: Optional[Mesh]) -> bool:
    return mesh is not None and any(t == AxisType.Explicit for t in mesh.axis_types)


# --- inputs -------------------------------------------------------------------------------


@dataclasses.dataclass
class Input:
    """One traced input value: an array, an implicit array, or a NamedArray's content."""

    path: str
    value: Any
    axes: Optional[tuple]  # the NamedArray's axes, to re-wrap the dense value
    names: Names
    mapping: Optional[ResourceMapping]

    @property
    def implicit(self) -> bool:
        return is_implicit(self.value)

    @property
    def leaves(self) -> list:
        return jax.tree_util.tree_leaves(self.value)

    @property
    def leaf_names(self) -> list[Names]:
        return leaf_names_of(self.value, self.names)

    def spec(self, sharded: bool) -> jax.ShapeDtypeStruct:
        """The dense logical value's shape and dtype (with its sharding when ``sharded``)."""
        if self.implicit:
            return jax.ShapeDtypeStruct(self.value.shape, self.value.dtype)
        aval = jax.typeof(self.value)
        return jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=aval.weak_type,
                                    sharding=aval.sharding if sharded else None)

    def wrap(self, dense: Any) -> Any:
        return dense if self.axes is None else NamedArray(dense, self.axes)


def _is_input(x: Any) -> bool:
    return isinstance(x, NamedArray) or is_implicit(x) or is_array(x)


class Inputs:
    """The traced inputs of one call and how to rebuild the arguments around new values."""

    def __init__(self, args: Sequence[Any], kwargs: dict, config: Config):
        flat, self._tree = jax.tree_util.tree_flatten_with_path((tuple(args), dict(kwargs)), is_leaf=is_unit)
        names = value_names(args, kwargs, config.in_axes)
        self._flat = [x for _, x in flat]
        self._slots: list[int] = []
        self.items: list[Input] = []
        for i, ((path, x), n) in enumerate(zip(flat, names)):
            if not _is_input(x):
                if n:
                    raise ValueError(f"in_axes names {_path_text(path)} {n} but it is "
                                     f"{type(x).__name__} {x!r}, not an array: only arrays can be named")
                continue
            value, axes = (x.array, x.axes) if isinstance(x, NamedArray) else (x, None)
            self.items.append(Input(_path_text(path), value, axes, n, _input_mapping(path, config)))
            self._slots.append(i)

    @property
    def has_implicit(self) -> bool:
        return any(i.implicit for i in self.items)

    @property
    def leaves(self) -> list:
        return [leaf for i in self.items for leaf in i.leaves]

    @property
    def leaf_names(self) -> list[Names]:
        return [n for i in self.items for n in i.leaf_names]

    def rebuild(self, values: Sequence[Any]) -> tuple[tuple, dict]:
        """The arguments with input ``k`` replaced by ``values[k]`` (re-wrapped if named)."""
        flat = list(self._flat)
        for slot, item, v in zip(self._slots, self.items, values):
            flat[slot] = item.wrap(v)
        return jax.tree_util.tree_unflatten(self._tree, flat)

    def values_from_leaves(self, leaves: Sequence[Any]) -> list:
        """One value per input from their flattened leaves (implicit arrays rebuilt)."""
        out, k = [], 0
        for item in self.items:
            tree = jax.tree_util.tree_structure(item.value)
            out.append(jax.tree_util.tree_unflatten(tree, leaves[k:k + tree.num_leaves]))
            k += tree.num_leaves
        return out


def _path_text(path: tuple) -> str:
    """``args[0]['w']`` from a key path into ``(args, kwargs)``."""
    if not path:
        return "arguments"
    head, rest = path[0], path[1:]
    where = "args" if getattr(head, "idx", None) == 0 else "kwargs"
    return where + jax.tree_util.keystr(rest)


def _input_mapping(path: tuple, config: Config) -> Optional[ResourceMapping]:
    """The mapping that places the input at ``path`` (into ``(args, kwargs)``):
    ``in_axis_resources`` (whole, or ``{argnum: mapping}``), else the compute mapping."""
    iar, mapping = config.in_axis_resources, config.mapping
    if iar is None:
        return mapping
    if isinstance(iar, Mapping) and iar and all(isinstance(k, int) for k in iar):
        positional = getattr(path[0], "idx", None) == 0
        return iar.get(path[1].idx, mapping) if positional else mapping
    return iar


def collect_inputs(args: Sequence[Any], kwargs: dict, config: Config) -> Inputs:
    """Find the traced inputs of ``fn(*args, **kwargs)``, each with its names and mapping."""
    return Inputs(args, kwargs, config)


# --- the program and its evaluation -----------------------------------------------------


def _specs(closed: jcore.ClosedJaxpr) -> list:
    return [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=getattr(a, "weak_type", False))
            for a in closed.in_avals]


@dataclasses.dataclass
class Program:
    """A jaxpr between passes, with the names of its inputs and outputs.

    ``pending``: a transformation not yet applied (``pending(closed, *values)`` evaluates
    ``closed`` with it); :attr:`closed` applies it by tracing, :meth:`evaluate` while running.
    """

    jaxpr: jcore.ClosedJaxpr
    in_names: list
    in_maps: list
    out_names: list
    names: Any = None
    implicit_stats: Any = None
    pending: Optional[Callable[..., list]] = None

    @property
    def closed(self) -> jcore.ClosedJaxpr:
        """The program as a jaxpr (a pending transformation traced in)."""
        if self.pending is not None:
            pending, jaxpr = self.pending, self.jaxpr
            self.jaxpr = jax.make_jaxpr(lambda *a: pending(jaxpr, *a))(*_specs(jaxpr))
            self.pending = None
        return self.jaxpr

    def evaluate(self, *values: Any) -> list:
        """Run the program on ``values`` (tracers or arrays), re-binding each equation with
        its own source info and name stack."""
        if self.pending is not None:
            return self.pending(self.jaxpr, *values)
        return EvalInterpreter().run(self.jaxpr, *values)

    def replace(self, **changes: Any) -> "Program":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass
class Traced:
    """The function traced once: its program and how to rebuild its outputs."""

    program: Program
    out_tree: Any
    out_mask: tuple
    out_statics: list
    plain_outputs: list
    """Per array output: True if the function returned it plain (not in a NamedArray)."""

    def outputs(self, arrays: Sequence[Any]) -> Any:
        """The function's output structure with ``arrays`` as its array leaves."""
        arrays, statics = iter(arrays), iter(self.out_statics)
        leaves = [next(arrays) if m else next(statics) for m in self.out_mask]
        return jax.tree_util.tree_unflatten(self.out_tree, leaves)


@contextlib.contextmanager
def tracing_context(config: Config) -> Iterator[None]:
    """Under a mesh with Explicit axes whose values the names place: trace in Auto mode."""
    if config.names_place_values and _has_explicit_axes(config.mesh):
        with jax.sharding.use_abstract_mesh(auto_twin(config.mesh).abstract_mesh):
            yield
    elif config.shards and not config.names_place_values and not jax.sharding.get_abstract_mesh().axis_names:
        with jax.sharding.use_abstract_mesh(config.mesh.abstract_mesh):
            yield
    else:
        yield


def trace(fn: Callable, inputs: Inputs, config: Config) -> Traced:
    """Trace ``fn`` once on the inputs' dense logical values (``implicit="pytree"``: on
    their parts). The jaxpr keeps the user's source info and name stack."""
    box: dict = {}
    pytree = config.implicit == "pytree"
    sharded_specs = not config.names_place_values

    def flat_fn(*values: Any) -> list:
        if pytree:
            values = inputs.values_from_leaves(values)
        args, kwargs = inputs.rebuild(values)
        out = fn(*args, **kwargs)
        leaves, tree = jax.tree_util.tree_flatten(out)
        mask = tuple(map(is_array, leaves))
        box.update(tree=tree, mask=mask, statics=[x for x, m in zip(leaves, mask) if not m],
                   names=output_names(out))
        return [x for x, m in zip(leaves, mask) if m]

    if pytree:
        specs = [jax.ShapeDtypeStruct(jax.typeof(x).shape, jax.typeof(x).dtype) for x in inputs.leaves]
        in_names = inputs.leaf_names
        in_maps = [i.mapping for i in inputs.items for _ in i.leaves]
    else:
        specs = [i.spec(sharded_specs) for i in inputs.items]
        in_names = [i.names for i in inputs.items]
        in_maps = [i.mapping for i in inputs.items]
    with tracing_context(config):
        closed = jax.make_jaxpr(flat_fn)(*specs)
    program = Program(closed, in_names, in_maps, list(box["names"]))
    return Traced(program, box["tree"], box["mask"], box["statics"], [n is None for n in box["names"]])


def output_names(tree: Any) -> list[Names]:
    """One entry per array leaf of ``tree``: the axis names of its NamedArray, or None."""
    out: list[Names] = []
    for leaf in jax.tree_util.tree_leaves(tree, is_leaf=is_unit):
        if isinstance(leaf, NamedArray):
            out.extend(leaf_names_of(leaf.array, leaf.axis_names))
        elif is_implicit(leaf):
            out.extend(leaf_names_of(leaf, None))
        elif is_array(leaf):
            out.append(None)
    return out


# --- the pass list ------------------------------------------------------------------------

Hook = Callable[[str, Program], None]
_HOOK: contextvars.ContextVar[Optional[Hook]] = contextvars.ContextVar("namax_pass_hook", default=None)


@contextlib.contextmanager
def recording(hook: Hook) -> Iterator[None]:
    """Call ``hook(stage, program)`` after the trace (stage ``"jaxpr"``) and after each pass
    of every program traced inside the block (``dump-hlo`` records the stages this way)."""
    token = _HOOK.set(hook)
    try:
        yield
    finally:
        _HOOK.reset(token)


def passes(config: Config, inputs: Inputs) -> list:
    """The passes that apply to this call, in order: implicit rewrite, names, sharding."""
    out: list = []
    if config.implicit == "dense" and inputs.has_implicit:
        out.append(ImplicitPass(inputs))
    if config.solves_names:
        out.append(NamesPass())
    if config.shards or config.solves_names:
        implicit = config.implicit == "dense" and inputs.has_implicit
        paths = [i.path for i in inputs.items for _ in (i.leaves if implicit else [i])]
        out.append(ShardingPass(config, paths))
    return out


def run(fn: Callable, args: Sequence[Any], kwargs: dict, config: Config) -> Any:
    """``fn(*args, **kwargs)`` through the pass list, inside a trace (``jax.jit``'s).

    Without passes (no implicit inputs, no names to solve, no mapping) and no hook, ``fn``
    is simply called: the trace is ``jax.jit``'s own. Non-array outputs come back wrapped
    (:func:`namax.arguments.wrap_static_outputs`).
    """
    inputs = collect_inputs(args, kwargs, config)
    hook = _HOOK.get()
    pass_list = passes(config, inputs)
    if not pass_list and hook is None:
        out = fn(*args, **kwargs)
    else:
        traced = trace(fn, inputs, config)
        with tracing_context(config):
            program = run_passes(traced.program, pass_list, hook)
        outs = evaluate(program, inputs.leaves, config)
        if config.out_axes == "infer":
            outs = [x if not plain or axes_of(n, x.shape) is None else NamedArray(x, axes_of(n, x.shape))
                    for x, n, plain in zip(outs, program.out_names, traced.plain_outputs)]
        out = traced.outputs(outs)
    leaves, tree = jax.tree_util.tree_flatten(out)
    return jax.tree_util.tree_unflatten(tree, wrap_static_outputs(leaves))


def evaluate(program: Program, leaves: Sequence[Any], config: Config) -> list:
    """Run the final program on the call's input leaves.

    Under a mesh with Explicit axes whose values the names place, the program runs in
    Auto mode (``jax.sharding.auto_axes``) and its outputs come back with the shardings
    their names map to.
    """
    if not (config.names_place_values and _has_explicit_axes(config.mesh)):
        return program.evaluate(*leaves)
    out_mapping = config.out_mapping if config.out_mapping is not None else config.mapping
    shapes = [v.aval.shape for v in program.jaxpr.jaxpr.outvars]
    specs = output_specs(program.out_names, shapes, out_mapping, config.mesh)
    inputs_placed = any(
        any(spec_or_none(n, v.aval.shape, m if m is not None else config.mapping or {}, config.mesh, strict=False,
                         what="input"))
        for n, m, v in zip(program.in_names, program.in_maps, program.jaxpr.jaxpr.invars))
    # When the mapping places nothing, no value would be on the mesh and the jit would run on
    # one device while auto_axes asks for mesh outputs: replicate the inputs over the mesh.
    replicate = not inputs_placed and not any(any(spec) for spec in specs)
    replicated = NamedSharding(auto_twin(config.mesh), PartitionSpec())

    def run(*values):
        if replicate:
            values = [jax.lax.with_sharding_constraint(x, replicated) if hasattr(x, "shape") else x for x in values]
        return program.evaluate(*values)

    with jax.sharding.use_abstract_mesh(config.mesh.abstract_mesh):
        return jax.sharding.auto_axes(run, out_sharding=specs)(*leaves)


def run_passes(program: Program, pass_list: Sequence[Callable[[Program], Program]],
               hook: Optional[Hook] = None) -> Program:
    """Apply each pass in turn; ``hook`` sees the traced program and each pass's result."""
    if hook is not None:
        program.closed
        hook("jaxpr", program)
    for p in pass_list:
        program = p(program)
        if hook is not None:
            program.closed
            hook(p.name, program)
    return program


def analyse(fn: Callable, args: Sequence[Any], kwargs: dict, config: Config, through: str = "names") -> Program:
    """Trace ``fn`` outside any jit and run the passes up to ``through`` (``"implicit"`` or
    ``"names"``): the program the names pass sees, with its names solved."""
    inputs = collect_inputs(args, kwargs, config)
    program = trace(fn, inputs, config).program
    pass_list = [p for p in passes(config, inputs) if p.name == "implicit"]
    if through == "names":
        pass_list.append(NamesPass())
    return run_passes(program, pass_list, _HOOK.get())


def axes_of(names: Names, shape: Sequence[int]) -> Optional[tuple]:
    """Axes for an output whose every dim got a plain string name (else None)."""
    if names is None or len(names) != len(shape) or not all(isinstance(n, str) for n in names):
        return None
    if len(set(names)) != len(names):
        return None
    return tuple(Axis(n, s) for n, s in zip(names, shape))


__all__ = ["Config", "Input", "Inputs", "Program", "Traced", "collect_inputs", "trace", "passes", "run",
           "run_passes", "recording", "analyse", "output_names", "is_unit", "IMPLICIT_MODES"]
