"""The stages of a dump: what namax did to one program, pass by pass.

A :class:`Program` holds the function, its arguments and the partitioning, and computes
each intermediate (traced jaxpr, implicit rewrite, names, namedjit lowering, compiled
executable) once, on first use. Each stage builder in :data:`BUILDERS` turns a Program
into a :class:`Stage`: a title, the text to read and, when the stage transforms the
program, the text it is compared against for ``--diff``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import re
import warnings
from collections import Counter
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import jax
import numpy as np

from ..jit import NamedJit, namedjit
from ..named import NamedArray
from ..partitioning import pspec_for
from ..infer import value_names
from ..passes import pipeline
from ..passes.names import NamesResult, infer


class StageError(RuntimeError):
    """A stage could not be built; ``stage`` says which, the message says why."""

    def __init__(self, stage: str, what: str, cause: BaseException):
        self.stage, self.what, self.cause = stage, what, cause
        super().__init__(f"{what} failed: {type(cause).__name__}: {_first_line(cause)}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@dataclasses.dataclass
class Stage:
    """One stage of a dump: ``text`` to read, ``before``/``after`` for its diff."""

    key: str
    title: str
    text: str
    notes: list[str] = dataclasses.field(default_factory=list)
    before: Optional[str] = None
    """The program text this stage's pass started from (None: the stage changes nothing)."""
    before_label: str = ""
    after: Optional[str] = None
    """The program text the diff compares (default: ``text``)."""

    @property
    def number(self) -> int:
        return list(BUILDERS).index(self.key) + 1

    @property
    def filename(self) -> str:
        return f"{self.number:02d}-{self.key}.txt"

    @property
    def diff(self) -> str:
        """A unified diff from ``before`` to this stage's program ('' when nothing to compare)."""
        if self.before is None:
            return ""
        after = self.text if self.after is None else self.after
        return program_diff(self.before, after, self.before_label, f"{self.number:02d}-{self.key}")


_VAR = re.compile(r"\b[a-z]{1,2}\b")


def program_diff(before: str, after: str, before_label: str, after_label: str, context: int = 3) -> str:
    """A unified diff that matches lines up to jaxpr variable names (``a``, ``bq``).

    A pass that inserts equations renames every later variable; comparing lines with the
    variables masked shows only the inserted and changed equations (printed as they are).
    """
    old, new = before.splitlines(), after.splitlines()
    matcher = difflib.SequenceMatcher(None, [_VAR.sub("_", x) for x in old], [_VAR.sub("_", x) for x in new],
                                      autojunk=False)
    out = []
    for group in matcher.get_grouped_opcodes(context):
        if not out:
            out += [f"--- {before_label}", f"+++ {after_label}"]
        (_, i1, _, j1, _), (_, _, i2, _, j2) = group[0], group[-1]
        out.append(f"@@ -{i1 + 1},{i2 - i1} +{j1 + 1},{j2 - j1} @@")
        for tag, a1, a2, b1, b2 in group:
            if tag == "equal":
                out += [" " + x for x in new[b1:b2]]
                continue
            out += ["-" + x for x in old[a1:a2]]
            out += ["+" + x for x in new[b1:b2]]
    return "\n".join(out)


# --- argument handling -----------------------------------------------------------------


def _is_implicit(x: Any) -> bool:
    try:
        from ..quant import is_implicit
    except ImportError:
        return False
    return is_implicit(x)


def _is_value_leaf(x: Any) -> bool:
    return isinstance(x, NamedArray) or _is_implicit(x)


def _is_dynamic(x: Any) -> bool:
    return _is_implicit(x) or isinstance(x, (jax.Array, np.ndarray, np.generic))


def _child_names(value: Any, names: Optional[tuple]) -> list[Optional[tuple]]:
    """Names for each array leaf of ``value`` (the same expansion namedjit uses)."""
    return pipeline.expand(value, names)


# --- the program and its intermediates ---------------------------------------------------


@dataclasses.dataclass
class ImplicitStats:
    """Equations with implicit operands: handled by a rule (rewritten) or materialized."""

    rewritten: Counter = dataclasses.field(default_factory=Counter)
    materialized: Counter = dataclasses.field(default_factory=Counter)  # (primitive, class) -> count


_MATERIALIZED = re.compile(r"Primitive (\S+) was not handled by class (\w+)")


@contextlib.contextmanager
def _quiet_materialize() -> Iterator[None]:
    """Silence materialization warnings (the implicit stage has counted them already)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*implicit args will be materialized")
        yield


class Program:
    """A function, its arguments and a partitioning, with every stage's intermediate cached."""

    def __init__(self, fn: Callable, args: Sequence[Any], kwargs: Optional[Mapping[str, Any]] = None, *,
                 axis_resources: Optional[Mapping[str, Any]] = None, mesh: Optional[jax.sharding.Mesh] = None,
                 in_axes: Optional[Sequence[Any]] = None):
        self.target = fn
        self.fn = fn.fn if isinstance(fn, NamedJit) else fn
        self.args, self.kwargs = tuple(args), dict(kwargs or {})
        own = fn if isinstance(fn, NamedJit) else None
        self.axis_resources = dict(axis_resources) if axis_resources is not None else (
            own.axis_resources if own is not None else None)
        self.mesh = mesh if mesh is not None else (own.mesh if own is not None else None)
        self.in_axes = in_axes if in_axes is not None else (own.in_axes if own is not None else None)
        if self.in_axes is not None and len(tuple(self.in_axes)) != len(self.args):
            raise ValueError(f"in_axes has {len(tuple(self.in_axes))} entries for {len(self.args)} positional arguments")
        self._leaves, self._treedef = jax.tree_util.tree_flatten((self.args, self.kwargs), is_leaf=_is_implicit)
        self._dynamic = [_is_dynamic(x) for x in self._leaves]

    # -- inputs -----------------------------------------------------------------------
    @property
    def values(self) -> list:
        """The traced inputs: arrays and implicit arrays, in flattening order."""
        return [x for x, d in zip(self._leaves, self._dynamic) if d]

    @functools.cached_property
    def value_names(self) -> list[Optional[tuple]]:
        """Axis names per traced input (from NamedArrays or ``in_axes``)."""
        per_value = value_names(self.args, self.kwargs, self.in_axes)
        value_leaves = jax.tree_util.tree_leaves((self.args, self.kwargs), is_leaf=_is_value_leaf)
        # expand NamedArrays (one array leaf each) to the is_implicit flattening used for tracing
        names: list = []
        for leaf, n in zip(value_leaves, per_value):
            k = len(jax.tree_util.tree_leaves(leaf, is_leaf=_is_implicit))
            names.extend([n] * k)
        return [n for n, d in zip(names, self._dynamic) if d]

    @property
    def has_implicit(self) -> bool:
        return any(_is_implicit(x) for x in self.values)

    def _rebuild(self, values: Sequence[Any]) -> tuple:
        it = iter(values)
        leaves = [next(it) if d else x for x, d in zip(self._leaves, self._dynamic)]
        return jax.tree_util.tree_unflatten(self._treedef, leaves)

    # -- stage 1: the traced program (implicit inputs as their logical avals) ------------
    @functools.cached_property
    def traced(self) -> jax.extend.core.ClosedJaxpr:
        def flat_fn(*values):
            args, kwargs = self._rebuild(values)
            out = self.fn(*args, **kwargs)
            return [x for x in jax.tree_util.tree_leaves(out) if hasattr(x, "shape") and hasattr(x, "dtype")]

        specs = [jax.ShapeDtypeStruct(np.shape(x), x.dtype) for x in self.values]
        try:
            return jax.make_jaxpr(flat_fn)(*specs)
        except Exception as e:  # noqa: BLE001 -- any tracing failure is reported as such
            raise StageError("jaxpr", "tracing the function", e) from e

    # -- stage 2: the implicit-array rewrite ------------------------------------------
    @functools.cached_property
    def rewritten(self) -> tuple[Optional[jax.extend.core.ClosedJaxpr], ImplicitStats]:
        """The program with implicit inputs replaced by their children, and what happened to each use."""
        stats = ImplicitStats()
        if not self.has_implicit:
            return None, stats
        from ..quant.interpret import ImplicitInterpreter
        from ..quant import is_implicit

        class Recording(ImplicitInterpreter):
            def eval_eqn(self, eqn, invals):
                if not any(is_implicit(v) for v in invals):
                    return super().eval_eqn(eqn, invals)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    outs = super().eval_eqn(eqn, invals)
                materialized = [m for w in caught if (m := _MATERIALIZED.search(str(w.message)))]
                for w in caught:
                    if not _MATERIALIZED.search(str(w.message)):
                        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                for m in materialized:
                    stats.materialized[(m.group(1), m.group(2))] += 1
                if not materialized and eqn.primitive.name not in self.rules:
                    stats.rewritten[eqn.primitive.name] += 1
                return outs

        closed, trees = self.traced, [jax.tree_util.tree_structure(v) for v in self.values]
        counts = [t.num_leaves for t in trees]

        def run(*children):
            values, start = [], 0
            for tree, n in zip(trees, counts):
                values.append(jax.tree_util.tree_unflatten(tree, children[start:start + n]))
                start += n
            outs = Recording().run(closed, *values)
            return jax.tree_util.tree_leaves(outs)

        children = [c for v in self.values for c in jax.tree_util.tree_leaves(v)]
        try:
            return jax.make_jaxpr(run)(*children), stats
        except Exception as e:  # noqa: BLE001
            raise StageError("implicit", "the implicit-array rewrite", e) from e

    @property
    def program(self) -> jax.extend.core.ClosedJaxpr:
        """The jaxpr the names and sharding passes see: rewritten if there were implicit arrays."""
        rewritten, _ = self.rewritten
        return self.traced if rewritten is None else rewritten

    @property
    def program_names(self) -> list[Optional[tuple]]:
        if not self.has_implicit:
            return self.value_names
        return [n for v, vn in zip(self.values, self.value_names) for n in _child_names(v, vn)]

    # -- stage 3: names ------------------------------------------------------------------
    @functools.cached_property
    def names(self) -> NamesResult:
        try:
            return infer(self.program, self.program_names)
        except Exception as e:  # noqa: BLE001
            raise StageError("names", "the names pass", e) from e

    # -- stages 4-6: namedjit --------------------------------------------------------------
    @property
    def sharded(self) -> bool:
        return self.mesh is not None and bool(self.axis_resources)

    @functools.cached_property
    def jitted(self) -> NamedJit:
        """The namedjit function whose lowering the last stages show.

        With implicit arguments it takes their parts (one positional argument per array,
        named as in the names stage) and runs ``use_implicit_args(fn)`` inside.
        """
        if self.has_implicit:
            from ..quant import use_implicit_args

            implicit_fn, trees = use_implicit_args(self.fn), [jax.tree_util.tree_structure(v) for v in self.values]

            def on_parts(*children):
                values, start = [], 0
                for tree in trees:
                    values.append(jax.tree_util.tree_unflatten(tree, children[start:start + tree.num_leaves]))
                    start += tree.num_leaves
                args, kwargs = self._rebuild(values)
                return implicit_fn(*args, **kwargs)

            names = self.program_names
            in_axes = tuple(names) if any(n is not None for n in names) else None
            return namedjit(on_parts, axis_resources=self.axis_resources, mesh=self.mesh, in_axes=in_axes)
        if isinstance(self.target, NamedJit) and self.axis_resources == self.target.axis_resources \
                and self.mesh is self.target.mesh and self.in_axes is self.target.in_axes:
            return self.target
        return namedjit(self.fn, axis_resources=self.axis_resources, mesh=self.mesh, in_axes=self.in_axes)

    @property
    def call(self) -> tuple[tuple, dict]:
        """The positional and keyword arguments :attr:`jitted` is called with."""
        if self.has_implicit:
            return tuple(c for v in self.values for c in jax.tree_util.tree_leaves(v)), {}
        return self.args, self.kwargs

    @functools.cached_property
    def after_passes(self) -> jax.extend.core.ClosedJaxpr:
        """namedjit's traced program: the jaxpr after its passes (sharding constraints included)."""
        try:
            with _quiet_materialize():
                return self.jitted.trace(*self.call[0], **self.call[1]).jaxpr
        except Exception as e:  # noqa: BLE001
            raise StageError("sharding", "namedjit tracing", e) from e

    @functools.cached_property
    def lowered(self):
        """``(annotated Lowered, AnnotationReport, StableHLO text before annotation)``."""
        try:
            args, kwargs = self.call
            with _quiet_materialize():
                plain = self.jitted.trace(*args, **kwargs).lower().as_text()
                lowered, report = self.jitted.lower_with_report(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            raise StageError("stablehlo", "lowering with namedjit", e) from e
        return lowered, report, plain

    @functools.cached_property
    def compiled(self) -> jax.stages.Compiled:
        try:
            return self.lowered[0].compile()
        except Exception as e:  # noqa: BLE001
            raise StageError("hlo", "XLA compilation", e) from e


# --- stage builders -----------------------------------------------------------------------

_CONSTRAINT = re.compile(r"sharding_constraint\[\n(.*?)\n\s*\]", re.S)
_SPEC = re.compile(r"spec=(P\(.*?\))[,)]")
_HLO_TABLES = re.compile(r"\n(FileNames|FunctionNames|FileLocations|StackFrames)\n.*?(?=\n\n|\Z)", re.S)


def jaxpr_text(closed: Any) -> str:
    """``str(jaxpr)`` with each sharding constraint's parameters shortened to its PartitionSpec."""
    def short(m: re.Match) -> str:
        spec = _SPEC.search(m.group(1))
        return f"sharding_constraint[{spec.group(1) if spec else '...'}]"

    return _CONSTRAINT.sub(short, str(closed))


def hlo_text(text: str) -> str:
    """HLO text without the stack-frame tables XLA appends (file names, locations)."""
    return re.sub(r"\n{3,}", "\n\n", _HLO_TABLES.sub("", text))



def _inputs_note(p: Program) -> str:
    parts = []
    for x, n in zip(p.values, p.value_names):
        shape = "x".join(map(str, np.shape(x))) or "scalar"
        kind = type(x).__name__ if _is_implicit(x) else "array"
        parts.append(f"{kind} {shape}" + (f" ({','.join('_' if a is None else str(a) for a in n)})" if n else ""))
    return "inputs: " + "; ".join(parts) if parts else "inputs: none"


def build_jaxpr(p: Program) -> Stage:
    return Stage("jaxpr", "the traced program (jax.make_jaxpr)", jaxpr_text(p.traced), notes=[_inputs_note(p)])


def build_implicit(p: Program) -> Stage:
    if not p.has_implicit:
        return Stage("implicit", "implicit-array rewrite", "no implicit arrays in the arguments: nothing to rewrite")
    rewritten, stats = p.rewritten
    notes = [_implicit_line(stats)]
    return Stage("implicit", "implicit-array rewrite (namax.quant): implicit inputs replaced by their parts",
                 jaxpr_text(rewritten), notes=notes, before=jaxpr_text(p.traced), before_label="01-jaxpr")


def _implicit_line(stats: ImplicitStats) -> str:
    rewritten = sum(stats.rewritten.values())
    materialized = sum(stats.materialized.values())
    line = f"implicit arrays: {rewritten} use(s) rewritten"
    if stats.rewritten:
        line += " (" + ", ".join(f"{k} x{v}" for k, v in sorted(stats.rewritten.items())) + ")"
    line += f", {materialized} materialized"
    if stats.materialized:
        line += " (" + ", ".join(f"{k} of {c} x{v}" for (k, c), v in sorted(stats.materialized.items())) + ")"
    return line


def build_names(p: Program) -> Stage:
    r = p.names
    notes = [r.coverage_report().splitlines()[0]] + r.coverage_report().splitlines()[1:]
    if p.has_implicit:
        notes.append("solved on the rewritten program (an implicit array's parts of its own shape share its names)")
    return Stage("names", "names pass: every value typed by its axis names", r.pretty(), notes=notes)


def format_type(aval: Any, names: Sequence[Any]) -> str:
    """``f32[batch:8,embed:256]`` from an aval and its solved names."""
    dtype = aval.str_short(short_dtypes=True).split("[", 1)[0]

    def one(n):
        if n is None:
            return "_"
        return "*".join(one(x) for x in n) if isinstance(n, tuple) else str(n)

    return f"{dtype}[{','.join(f'{one(n)}:{s}' for n, s in zip(names, aval.shape))}]"


def _spec_table(p: Program) -> list[str]:
    r, rows = p.names, []
    sizes = dict(zip(p.mesh.axis_names, p.mesh.devices.shape))

    def row(label, aval, names):
        if not any(n is not None for n in names):
            return
        spec = pspec_for(names, aval.shape, p.axis_resources, p.mesh, strict=False, what="value")
        rows.append(f"  {label:<28} {format_type(aval, names):<36} {spec}")

    for i, (v, names) in enumerate(zip(p.program.jaxpr.invars, r.in_names)):
        row(f"input {i}", v.aval, names)
    for k, e in enumerate(r.equations()):
        where = f"#{k} {e.primitive}" + (f" (in {'>'.join(e.path)})" if e.path else "")
        for v, names in zip(e.eqn.outvars, e.out_names):
            if hasattr(v.aval, "shape") and v.aval.shape:
                row(where, v.aval, names)
    mesh = ", ".join(f"{a}={s}" for a, s in sizes.items())
    mapping = ", ".join(f"{k}->{v}" for k, v in p.axis_resources.items())
    return [f"mesh: {mesh}; axis resources: {mapping}", "named values and their PartitionSpecs:", *rows]


def build_sharding(p: Program) -> Stage:
    if not p.sharded:
        return Stage("sharding", "sharding pass",
                     "no mesh and axis resources given (--mesh, --axis-resources): the sharding pass did not run")
    program = jaxpr_text(p.after_passes)
    table = _spec_table(p)
    text = "\n".join(table) + "\n\nprogram after namedjit's passes (jit(...).trace):\n" + program
    base = "02-implicit" if p.has_implicit else "01-jaxpr"
    return Stage("sharding", "sharding pass: PartitionSpecs from the names, constraints in the program", text,
                 before=jaxpr_text(p.program), before_label=base, after=program)


def build_stablehlo(p: Program) -> Stage:
    lowered, report, plain = p.lowered
    return Stage("stablehlo", "annotated StableHLO (namedjit(...).lower())", lowered.as_text(),
                 notes=str(report).splitlines(), before=plain, before_label="jax lowering (before annotation)")


def build_hlo(p: Program) -> Stage:
    before = hlo_text(p.lowered[0].as_text(dialect="hlo"))
    return Stage("hlo", "XLA's optimized HLO (compiled.as_text())", hlo_text(p.compiled.as_text()),
                 notes=["stack-frame tables (FileNames ... StackFrames) omitted"],
                 before=before, before_label="HLO before XLA's optimizations")


BUILDERS: dict[str, Callable[[Program], Stage]] = {
    "jaxpr": build_jaxpr, "implicit": build_implicit, "names": build_names,
    "sharding": build_sharding, "stablehlo": build_stablehlo, "hlo": build_hlo,
}
"""Stage key -> builder, in pipeline order; a new pass adds its builder here."""
