"""``namedjit``: ``jax.jit`` that runs namax's passes on the traced program.

One call: jax.jit traces an inner function once per signature (its cache is keyed on the
pytree structure -- which holds every NamedArray's axes --, avals and static args). That
inner function traces the user's function to a jaxpr, runs the passes (sharding
constraints from the axis mapping, ...) through the shared interpreter and evaluates the
result. Cached calls go straight to jax.jit's dispatch: namax adds one context lookup.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import equinox as eqx
import jax
from jax.sharding import Mesh

from .partitioning import _CURRENT, Partitioning, ResourceMapping, auto_twin, current_partitioning, resolve_mesh
from .passes import implicit as implicit_pass
from .passes import pipeline
from .passes.stablehlo import annotated
from .infer import leaf_names

InAxisResources = Union[None, ResourceMapping, Mapping[int, ResourceMapping]]


class _Static:
    """Hashable holder for the non-array leaves of the arguments (Equinox-style filtering)."""

    __slots__ = ("treedef", "leaves", "_hash")

    def __init__(self, treedef, leaves):
        self.treedef, self.leaves = treedef, tuple(leaves)
        self._hash = hash((treedef, self.leaves))

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        return isinstance(other, _Static) and self.treedef == other.treedef and self.leaves == other.leaves


class NamedJit:
    """The callable returned by :func:`namedjit`; see there."""

    def __init__(self, fn: Callable, *, axis_resources: Optional[ResourceMapping] = None,
                 in_axis_resources: InAxisResources = None, out_axis_resources: Optional[ResourceMapping] = None,
                 mesh: Optional[Mesh] = None, static_argnums: Union[int, Sequence[int]] = (),
                 static_argnames: Union[str, Sequence[str]] = (), donate_argnums: Union[int, Sequence[int]] = (),
                 donate_argnames: Union[str, Sequence[str]] = (), in_axes: Optional[Sequence[Any]] = None):
        functools.update_wrapper(self, fn)
        self.in_axes = in_axes
        self.fn = fn
        self.axis_resources = None if axis_resources is None else dict(axis_resources)
        self.in_axis_resources = in_axis_resources
        self.out_axis_resources = out_axis_resources
        self.mesh = mesh
        self.static_argnums = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
        self.static_argnames = (static_argnames,) if isinstance(static_argnames, str) else tuple(static_argnames)
        self.donate_argnums = (donate_argnums,) if isinstance(donate_argnums, int) else tuple(donate_argnums)
        self.donate_argnames = (donate_argnames,) if isinstance(donate_argnames, str) else tuple(donate_argnames)
        self._traces = 0
        self._jits: dict[Any, Callable] = {}
        self._by_context: dict[Any, Callable] = {}
        self._filtered = False
        # unconfigured (no mapping, in_axes, ...): outside an axis_mapping context a call is
        # just the jax.jit call
        self._fast = self._jit_for(None) if self._unconfigured else None

    # --- which partitioning applies -----------------------------------------------------
    def _partitioning(self) -> Optional[Partitioning]:
        ctx = current_partitioning()
        mapping = self.axis_resources
        if mapping is None and ctx is not None:
            mapping = ctx.as_dict()
        if mapping is None and self.in_axis_resources is None and self.out_axis_resources is None:
            return None if self.in_axes is None else Partitioning.make({}, None)
        mesh = resolve_mesh(self.mesh or (ctx.mesh if ctx is not None else None))
        if mesh is None:
            return None if self.in_axes is None else Partitioning.make({}, None)
        return Partitioning.make(mapping or {}, mesh)

    # --- the traced inner function ------------------------------------------------------
    @property
    def trace_count(self) -> int:
        """How many times the function was traced (once per new signature or partitioning)."""
        return self._traces + sum(r._traces for r in self._filtered_runner_cache.values())

    def _impl(self, part: Optional[Partitioning], *args, **kwargs):
        self._traces += 1
        fn = implicit_pass.auto(self.fn) if implicit_pass.has_implicit((args, kwargs)) else self.fn
        if part is None:
            return fn(*args, **kwargs)
        mapping = part.as_dict()
        config = pipeline.PassConfig(
            mapping=mapping, mesh=None if part.mesh is None else auto_twin(part.mesh),
            out_mapping=self.out_axis_resources if self.out_axis_resources is not None else mapping,
            solve_names=self.in_axes is not None)
        leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
        return pipeline.run(fn, leaves, treedef, self._given_names(args, kwargs),
                            self._input_mappings(args, kwargs, mapping), config)

    def _given_names(self, args, kwargs) -> list:
        """Names per flattened leaf of (args, kwargs): NamedArray axes, else ``in_axes``."""
        if self.in_axes is None:
            return pipeline.leaf_names((args, kwargs))
        try:
            return leaf_names(args, kwargs, self.in_axes)
        except ValueError as e:
            raise ValueError(f"namedjit: {e}") from None

    def _input_mappings(self, args, kwargs, mapping) -> list[ResourceMapping]:
        """One mapping per flattened leaf of (args, kwargs), from ``in_axis_resources``."""
        iar = self.in_axis_resources
        per_arg = isinstance(iar, Mapping) and iar and all(isinstance(k, int) for k in iar)
        out: list[ResourceMapping] = []
        for i, a in enumerate(args):
            m = iar.get(i, mapping) if per_arg else (iar if iar is not None else mapping)
            out.extend([m] * len(jax.tree_util.tree_leaves(a)))
        m = mapping if per_arg else (iar if iar is not None else mapping)
        out.extend([m] * len(jax.tree_util.tree_leaves(kwargs)))
        return out

    def _jit_for(self, part: Optional[Partitioning]) -> Callable:
        fn = self._jits.get(part)
        if fn is None:
            fn = jax.jit(functools.partial(self._impl, part), static_argnums=self.static_argnums,
                         static_argnames=self.static_argnames, donate_argnums=self.donate_argnums,
                         donate_argnames=self.donate_argnames)
            self._jits[part] = fn
        return fn

    # --- calling -------------------------------------------------------------------------
    def _current_jit(self) -> Callable:
        """The jax.jit object for the partitioning in force (memoized on the contexts)."""
        ctx = current_partitioning()
        if ctx is None and self._unconfigured:
            return self._plain
        key = (ctx, jax.sharding.get_mesh() if self.mesh is None else None)
        jitted = self._by_context.get(key)
        if jitted is None:
            jitted = self._by_context[key] = self._jit_for(self._partitioning())
        return jitted

    @functools.cached_property
    def _plain(self) -> Callable:
        return self._jit_for(None)

    @functools.cached_property
    def _unconfigured(self) -> bool:
        return self.axis_resources is None and self.in_axis_resources is None and \
            self.out_axis_resources is None and self.in_axes is None

    def __call__(self, *args, **kwargs):
        # the common case first, with as few Python steps as possible
        if self._fast is not None and _CURRENT.get() is None:
            try:
                return self._fast(*args, **kwargs)
            except TypeError as e:
                if "as an abstract array" not in str(e) and "not a valid JAX type" not in str(e):
                    raise
                self._fast = None
                self._filtered = True
        jitted = self._current_jit()
        if not self._filtered:
            try:
                return jitted(*args, **kwargs)
            except TypeError as e:
                if "as an abstract array" not in str(e) and "not a valid JAX type" not in str(e):
                    raise
                self._filtered = True
        return self._call_filtered(jitted, args, kwargs)

    def _call_filtered(self, jitted, args, kwargs):
        # Non-array leaves (functions, strings inside modules) become one static argument.
        static_pos = set(self.static_argnums)
        dyn_args = [a for i, a in enumerate(args) if i not in static_pos]
        dyn, static = eqx.partition((dyn_args, kwargs), eqx.is_array)
        s_leaves, s_def = jax.tree_util.tree_flatten(static)
        key = _Static(s_def, s_leaves)
        runner = self._filtered_runner(jitted)
        return runner(dyn, key, tuple(args[i] for i in sorted(static_pos)))

    @functools.cached_property
    def _filtered_runner_cache(self) -> dict:
        return {}

    def _filtered_runner(self, jitted) -> Callable:
        runner = self._filtered_runner_cache.get(id(jitted))
        if runner is None:
            static_pos = sorted(self.static_argnums)
            fn = self.fn

            def call(dyn, key: _Static, statics):
                static = jax.tree_util.tree_unflatten(key.treedef, key.leaves)
                (dyn_args, kwargs) = eqx.combine(dyn, static)
                args = list(dyn_args)
                for pos, val in zip(static_pos, statics):
                    args.insert(pos, val)
                return fn(*args, **kwargs)

            inner = NamedJit(call, axis_resources=self.axis_resources, in_axis_resources=None,
                             out_axis_resources=self.out_axis_resources, mesh=self.mesh, static_argnums=(1, 2))
            runner = inner
            self._filtered_runner_cache[id(jitted)] = runner
        return runner

    def lower(self, *args, **kwargs) -> jax.stages.Lowered:
        """Lower to annotated StableHLO: ``.as_text()`` shows it, ``.compile()`` compiles it.

        The module is a clone of JAX's lowering after the StableHLO pass
        (:mod:`namax.passes.stablehlo`): producers, arguments and results carry their
        axis names; ``.annotation_report`` on the returned object is not available
        (``Lowered`` has slots), use :meth:`lower_with_report` for it.
        """
        return self.lower_with_report(*args, **kwargs)[0]

    def lower_with_report(self, *args, **kwargs):
        """``(annotated Lowered, AnnotationReport)``."""
        lowered = self._current_jit().lower(*args, **kwargs)
        static = set(self.static_argnums)
        dyn_args = tuple(a for i, a in enumerate(args) if i not in static)
        dyn_kwargs = {k: v for k, v in kwargs.items() if k not in self.static_argnames}
        arg_names = self._given_names(dyn_args, dyn_kwargs)
        kept = lowered._lowering.compile_args.get("kept_var_idx")
        if kept is not None and len(kept) != len(arg_names):
            arg_names = [n for i, n in enumerate(arg_names) if i in kept]
        result_names = pipeline.leaf_names(lowered.out_info)
        return annotated(lowered, arg_names, result_names)

    def trace(self, *args, **kwargs) -> jax.stages.Traced:
        """``jax.jit(...).trace``: the traced program (``.jaxpr``) after namax's passes."""
        return self._current_jit().trace(*args, **kwargs)


def namedjit(fn: Optional[Callable] = None, **kwargs) -> Union[NamedJit, Callable[[Callable], NamedJit]]:
    """``jax.jit`` for named code: names become shardings under an axis mapping.

    Arguments may be pytrees of NamedArrays, Equinox modules and plain arrays; outputs
    come back with their names. Options (all optional): ``axis_resources`` (axis name ->
    mesh axis, else the active :func:`namax.axis_mapping`), ``in_axis_resources`` (a
    mapping for the inputs, or ``{argnum: mapping}``), ``out_axis_resources``, ``mesh``
    (else the active ``jax.set_mesh`` mesh or the mapping context's), ``static_argnums``,
    ``static_argnames``, ``donate_argnums``, ``donate_argnames``.

    >>> import namax as nx
    >>> f = namedjit(lambda x: nx.sum(x * 2, "b"))
    >>> float(f(nx.ones(nx.Axis("b", 3))).array)
    6.0
    """
    if fn is None:
        return functools.partial(namedjit, **kwargs)
    return NamedJit(fn, **kwargs)


__all__ = ["namedjit", "NamedJit"]
