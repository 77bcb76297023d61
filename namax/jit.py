"""``namedjit``: ``jax.jit`` whose trace runs namax's passes.

A call splits its arguments once (:func:`namax.arguments.split_call`: array leaves are
traced, everything else is static) and calls one ``jax.jit`` object per partitioning
with ``(key, *array leaves per argument)``. On a cache miss ``jax.jit`` traces
:func:`namax.driver.run`, the one driver: the user's function is traced once on dense
logical values and the pass list runs on its jaxpr. ``.lower()`` and ``.trace()`` go
through the same split and the same jit object, so they show exactly what a call runs.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
from jax.sharding import Mesh

from .arguments import CallKey, StaticOut, join_call, split_call, unwrap_static_outputs
from .driver import Config, InAxisResources, collect_inputs
from .partitioning import Partitioning, normalize_mapping, ResourceMapping, current_partitioning, resolve_mesh
from .passes.stablehlo import annotated


def _per_argument(m: Any) -> bool:
    """``{argnum: mapping}`` rather than one mapping."""
    return isinstance(m, Mapping) and bool(m) and all(isinstance(k, int) for k in m)


def _as_tuple(x: Union[int, str, Sequence[Any]]) -> tuple:
    return (x,) if isinstance(x, (int, str)) else tuple(x)


class NamedJit:
    """The callable returned by :func:`namedjit`; see there.

    >>> import namax as nx
    >>> f = nx.namedjit(lambda x: nx.sum(x, "embed"))
    >>> x = nx.ones(nx.make_axes(batch=2, embed=3))
    >>> y = f(x); y = f(x)
    >>> isinstance(f, NamedJit), y.axes, f.trace_count  # the second call reuses the trace
    (True, (Axis('batch', 2),), 1)
    """

    def __init__(self, fn: Callable, *, axis_resources: Optional[ResourceMapping] = None,
                 in_axis_resources: InAxisResources = None, out_axis_resources: Optional[ResourceMapping] = None,
                 mesh: Optional[Mesh] = None, static_argnums: Union[int, Sequence[int]] = (),
                 static_argnames: Union[str, Sequence[str]] = (), donate_argnums: Union[int, Sequence[int]] = (),
                 donate_argnames: Union[str, Sequence[str]] = (), in_axes: Optional[Sequence[Any]] = None,
                 out_axes: Optional[str] = None, implicit: str = "dense", explicit_sharding: bool = False):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.in_axes = in_axes
        self.axis_resources = normalize_mapping(axis_resources)
        self.in_axis_resources = {i: normalize_mapping(m) for i, m in in_axis_resources.items()} \
            if _per_argument(in_axis_resources) else normalize_mapping(in_axis_resources)
        self.out_axis_resources = normalize_mapping(out_axis_resources)
        self.mesh = mesh
        self.out_axes = out_axes
        self.implicit = implicit
        self.explicit_sharding = explicit_sharding
        self.static_argnums = _as_tuple(static_argnums)
        self.static_argnames = _as_tuple(static_argnames)
        self.donate_argnums = _as_tuple(donate_argnums)
        self.donate_argnames = _as_tuple(donate_argnames)
        overlap = set(self.static_argnums) & set(self.donate_argnums)
        if overlap:
            raise ValueError(f"namedjit: argument {min(overlap)} is both static (static_argnums) and donated "
                             "(donate_argnums); a static argument has no buffer to donate")
        Config(implicit=implicit, out_axes=out_axes)  # validates the options now, not at the first call
        self._traces = 0
        self._jits: dict[Any, Callable] = {}
        self._by_context: dict[Any, Callable] = {}
        self._static_outputs: set = set()

    # --- which partitioning applies -----------------------------------------------------
    def _partitioning(self) -> Optional[Partitioning]:
        ctx = current_partitioning()
        mapping = self.axis_resources
        if mapping is None and ctx is not None:
            mapping = ctx.as_dict()
        if mapping is None and self.in_axis_resources is None and self.out_axis_resources is None:
            return None
        mesh = resolve_mesh(self.mesh or (ctx.mesh if ctx is not None else None))
        if mesh is None:
            given = [n for n in ("axis_resources", "in_axis_resources", "out_axis_resources")
                     if getattr(self, n) is not None]
            if given:  # a mapping the user gave must not be dropped without a word
                raise ValueError(f"namedjit: {' and '.join(given)} given but there is no mesh to shard over: "
                                 "pass mesh=, or call inside jax.set_mesh(mesh) or namax.axis_mapping(..., mesh=mesh)")
            return None
        return Partitioning.make(mapping or {}, mesh)

    def config(self, part: Optional[Partitioning]) -> Config:
        """The driver's configuration for a partitioning (None: no sharding pass)."""
        return Config(in_axes=self.in_axes, mapping=None if part is None else part.as_dict(),
                      mesh=None if part is None else part.mesh, in_axis_resources=self.in_axis_resources,
                      out_mapping=self.out_axis_resources, implicit=self.implicit, out_axes=self.out_axes,
                      explicit_sharding=self.explicit_sharding)

    # --- the traced inner function ------------------------------------------------------
    @property
    def trace_count(self) -> int:
        """How many times the function was traced (once per new signature or partitioning)."""
        return self._traces

    def _traced(self, config: Config, key: CallKey, *dyn_args: Any, **dyn_kwargs: Any) -> Any:
        from .driver import run

        self._traces += 1
        args, kwargs = join_call(key, dyn_args, dyn_kwargs)
        out = run(self.fn, args, kwargs, config)
        if any(isinstance(x, StaticOut) for x in jax.tree_util.tree_leaves(
                out, is_leaf=lambda x: isinstance(x, StaticOut))):
            self._static_outputs.add(key)
        return out

    def _jit_for(self, part: Optional[Partitioning]) -> Callable:
        fn = self._jits.get(part)
        if fn is None:
            config = self.config(part)

            def traced(key: CallKey, *dyn_args: Any, **dyn_kwargs: Any) -> Any:
                return self._traced(config, key, *dyn_args, **dyn_kwargs)

            traced.__name__ = getattr(self.fn, "__name__", "fn")  # the lowered module's name
            traced.__qualname__ = getattr(self.fn, "__qualname__", traced.__name__)
            fn = jax.jit(traced, static_argnums=0, keep_unused=True,
                         donate_argnums=tuple(i + 1 for i in self.donate_argnums),
                         donate_argnames=self.donate_argnames)
            self._jits[part] = fn
        return fn

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
        return self.axis_resources is None and self.in_axis_resources is None and self.out_axis_resources is None

    # --- calling -------------------------------------------------------------------------
    def _split(self, args: tuple, kwargs: dict) -> tuple[CallKey, list, dict]:
        if self.in_axes is not None and len(tuple(self.in_axes)) != len(args):
            raise ValueError(f"namedjit: in_axes has {len(tuple(self.in_axes))} entries for {len(args)} positional "
                             f"arguments (it takes one entry per argument): {self.in_axes!r}")
        return split_call(args, kwargs, self.static_argnums, self.static_argnames)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key, dyn_args, dyn_kwargs = self._split(args, kwargs)
        out = self._current_jit()(key, *dyn_args, **dyn_kwargs)
        return unwrap_static_outputs(out) if key in self._static_outputs else out

    def lower(self, *args: Any, **kwargs: Any) -> "Lowered":
        """Lower to annotated StableHLO: ``.as_text()`` shows it, ``.compile()`` compiles it
        (the compiled program takes the same arguments as the function).

        The module is a clone of JAX's lowering after the StableHLO pass
        (:mod:`namax.passes.stablehlo`): producers, arguments and results carry their
        axis names. :meth:`lower_with_report` also returns what was named.
        """
        return self.lower_with_report(*args, **kwargs)[0]

    def lower_with_report(self, *args: Any, **kwargs: Any) -> tuple["Lowered", Any]:
        """``(annotated Lowered, AnnotationReport)``."""
        return self.lower_for_dump(args, kwargs, keep_text_before=False)

    def lower_for_dump(self, args: tuple, kwargs: dict, keep_text_before: bool = True) -> tuple["Lowered", Any]:
        """:meth:`lower_with_report`; with ``keep_text_before`` the Lowered's
        ``text_before_annotation`` holds JAX's own StableHLO before the annotation pass
        (``dump-hlo`` diffs the two)."""
        key, dyn_args, dyn_kwargs = self._split(args, kwargs)
        jitted = self._current_jit()
        lowered = jitted.lower(key, *dyn_args, **dyn_kwargs)
        before = lowered.as_text() if keep_text_before else ""
        # the program keeps every argument (keep_unused=True), so names align one to one
        arg_names = self.argument_names(args, kwargs)
        from .driver import output_names

        lowered, report = annotated(lowered, arg_names, output_names(lowered.out_info))
        return Lowered(lowered, self, key, before), report

    def argument_names(self, args: tuple, kwargs: dict) -> list:
        """Axis names per array leaf the compiled program takes (in ``jax.jit``'s order)."""
        return collect_inputs(args, kwargs, self.config(None)).leaf_names

    def trace(self, *args: Any, **kwargs: Any) -> jax.stages.Traced:
        """``jax.jit(...).trace``: the traced program (``.jaxpr``) after namax's passes."""
        key, dyn_args, dyn_kwargs = self._split(args, kwargs)
        return self._current_jit().trace(key, *dyn_args, **dyn_kwargs)


class Lowered:
    """``jax.stages.Lowered`` of a namedjit call (every attribute is the Lowered's);
    :meth:`compile` gives a program called with the function's own arguments.

    >>> import namax as nx
    >>> x = nx.ones(nx.make_axes(batch=2, embed=3))
    >>> lowered = nx.namedjit(lambda x: x * 2).lower(x)
    >>> type(lowered).__name__, 'named_axes = "batch,embed"' in lowered.as_text()
    ('Lowered', True)
    """

    def __init__(self, lowered: jax.stages.Lowered, owner: NamedJit, key: CallKey, text_before_annotation: str = ""):
        self.lowered, self._owner, self._key = lowered, owner, key
        self.text_before_annotation = text_before_annotation
        """JAX's own StableHLO text, before the annotation pass."""

    def compile(self, *args: Any, **kwargs: Any) -> "Compiled":
        return Compiled(self.lowered.compile(*args, **kwargs), self._owner, self._key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.lowered, name)


class Compiled:
    """``jax.stages.Compiled`` of a namedjit call, called with the function's own arguments.

    >>> import namax as nx
    >>> x = nx.ones(nx.make_axes(batch=2, embed=3))
    >>> compiled = nx.namedjit(lambda x: nx.sum(x, "embed")).lower(x).compile()
    >>> y = compiled(x)  # called with the function's own (NamedArray) arguments
    >>> y.axes, y.array.tolist()
    ((Axis('batch', 2),), [3.0, 3.0])
    """

    def __init__(self, compiled: jax.stages.Compiled, owner: NamedJit, key: CallKey):
        self.compiled, self._owner, self._key = compiled, owner, key

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key, dyn_args, dyn_kwargs = self._owner._split(args, kwargs)
        if key != self._key:
            raise TypeError("namedjit: this program was compiled for arguments with other static parts or "
                            "structure (lower and compile again for these arguments)")
        return unwrap_static_outputs(self.compiled(*dyn_args, **dyn_kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.compiled, name)


def namedjit(fn: Optional[Callable] = None, axis_resources: Optional[ResourceMapping] = None,
             **kwargs: Any) -> Union[NamedJit, Callable[[Callable], NamedJit]]:
    """``jax.jit`` for named code: names become shardings under an axis mapping.

    Arguments may be pytrees of NamedArrays, Equinox modules, implicit arrays and plain
    arrays. As in Equinox's ``filter_jit``, array leaves are traced and every other leaf
    (functions, strings, Python numbers) is static. The function's outputs come back as it
    returns them: NamedArrays stay named, plain arrays stay plain.

    Options (all optional): ``axis_resources`` (axis name -> mesh axis, else the active
    :func:`namax.axis_mapping`), ``in_axis_resources`` (a mapping for the inputs, or
    ``{argnum: mapping}``), ``out_axis_resources``, ``mesh`` (else the active
    ``jax.set_mesh`` mesh or the mapping context's), ``in_axes`` (names for plain array
    arguments: the names pass then names every value), ``out_axes="infer"`` (plain
    outputs whose every dim got a name come back as NamedArrays), ``implicit``
    (``"dense"``: LoRA/int4 arguments reach the function as dense arrays and the implicit
    pass rewrites their uses; ``"pytree"``: they reach it as they are, for code that calls
    ``use_implicit_args`` itself, such as ``jax.grad(use_implicit_args(loss))``),
    ``explicit_sharding`` (under an Explicit mesh, let JAX's sharding-in-types place the
    values inside, for code that uses ``out_sharding=`` or ``reshard`` itself; names place
    only inputs and outputs), ``static_argnums``, ``static_argnames``, ``donate_argnums``,
    ``donate_argnames``. ``axis_resources`` may also be the second positional argument, as in
    Haliax's ``named_jit`` (``namax.named_jit`` is this function).

    >>> import namax as nx
    >>> f = namedjit(lambda x: nx.sum(x * 2, "b"))
    >>> float(f(nx.ones(nx.Axis("b", 3))).array)
    6.0
    >>> import jax.numpy as jnp
    >>> g = namedjit(lambda x, w: x @ w, in_axes=(("batch", "embed"), ("embed", "mlp")))
    >>> type(g(jnp.ones((2, 3)), jnp.ones((3, 4)))).__name__      # plain in, plain out
    'ArrayImpl'
    """
    if axis_resources is not None:  # positional second, as in Haliax's ``named_jit(fn, axis_resources)``
        kwargs["axis_resources"] = axis_resources
    if fn is None:
        return functools.partial(namedjit, **kwargs)
    return NamedJit(fn, **kwargs)


__all__ = ["namedjit", "NamedJit"]
