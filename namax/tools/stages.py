"""The stages of a dump: what namax did to one program, pass by pass.

A :class:`Program` holds the function, its arguments and the partitioning, and computes
each intermediate (traced jaxpr, implicit rewrite, names, namedjit lowering, compiled
executable) once, on first use. Each stage builder in :data:`BUILDERS` turns a Program
into a :class:`Stage`: a title, the text to read and, when the stage transforms the
program, the text it is compared against for ``--diff``. The last stage, ``costs``, reads
the compiled program back by axis name (:mod:`namax.tools.costs`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import re
import warnings
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import jax
import numpy as np

from ..driver import Inputs, Program as DriverProgram, collect_inputs, recording
from ..jit import NamedJit
from ..partitioning import pspec_for
from ..passes.implicit import ImplicitStats
from ..passes.names import NamesResult, infer


class StageError(RuntimeError):
    """A stage could not be built; ``stage`` says which, the message says why.

    >>> e = StageError("names", "the names pass", ValueError("axis 'batch' has two sizes\\nmore detail"))
    >>> e.stage, str(e)
    ('names', "the names pass failed: ValueError: axis 'batch' has two sizes")
    """

    def __init__(self, stage: str, what: str, cause: BaseException):
        self.stage, self.what, self.cause = stage, what, cause
        super().__init__(f"{what} failed: {type(cause).__name__}: {_first_line(cause)}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@dataclasses.dataclass
class Stage:
    """One stage of a dump: ``text`` to read, ``before``/``after`` for its diff.

    >>> s = Stage("names", "names pass", "b = sin a", before="b = cos a", before_label="01-jaxpr")
    >>> s.number, s.filename
    (3, '03-names.txt')
    >>> print(s.diff)
    --- 01-jaxpr
    +++ 03-names
    @@ -1,1 +1,1 @@
    -b = cos a
    +b = sin a
    """

    key: str
    title: str
    text: str
    notes: list[str] = dataclasses.field(default_factory=list)
    before: Optional[str] = None
    """The program text this stage's pass started from (None: the stage changes nothing)."""
    before_label: str = ""
    after: Optional[str] = None
    """The program text the diff compares (default: ``text``)."""
    report: Any = None
    """The stage's structured result, when it has one (``costs``: the :class:`~namax.tools.costs.CostReport`)."""

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

    >>> before = "b = sin a\\nc = mul b 2.0"
    >>> after = "b = sin a\\nc = neg b\\nd = mul c 2.0"   # an inserted eqn renames the later vars
    >>> print(program_diff(before, after, "before", "after"))
    --- before
    +++ after
    @@ -1,2 +1,3 @@
     b = sin a
    +c = neg b
     d = mul c 2.0
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


# --- the program and its intermediates ---------------------------------------------------


class Program:
    """A function, its arguments and a partitioning, run through namedjit's own driver once.

    ``namedjit(...).lower()`` of the call runs with a recording hook
    (:func:`namax.driver.recording`): the traced jaxpr and the program after each pass are
    the ones namedjit compiles, from the same single trace of the function.

    >>> import namax as nx
    >>> Batch, Embed = nx.make_axes(batch=2, embed=3)
    >>> p = Program(lambda x: nx.sum(x, Embed), (nx.ones((Batch, Embed)),))
    >>> [i.names for i in p.inputs.items], p.names.out_names, p.has_implicit, p.sharded
    ([('batch', 'embed')], [('batch',)], False, False)
    """

    def __init__(self, fn: Callable, args: Sequence[Any], kwargs: Optional[Mapping[str, Any]] = None, *,
                 axis_resources: Optional[Mapping[str, Any]] = None, mesh: Optional[jax.sharding.Mesh] = None,
                 in_axes: Optional[Sequence[Any]] = None):
        self.target = fn
        own = fn if isinstance(fn, NamedJit) else None
        self.fn = own.fn if own is not None else fn
        self.args, self.kwargs = tuple(args), dict(kwargs or {})
        self.axis_resources = dict(axis_resources) if axis_resources is not None else (
            own.axis_resources if own is not None else None)
        self.mesh = mesh if mesh is not None else (own.mesh if own is not None else None)
        self.in_axes = in_axes if in_axes is not None else (own.in_axes if own is not None else None)
        if self.in_axes is not None and len(tuple(self.in_axes)) != len(self.args):
            raise ValueError(f"in_axes has {len(tuple(self.in_axes))} entries for {len(self.args)} positional arguments")
        options = {} if own is None else dict(
            in_axis_resources=own.in_axis_resources, out_axis_resources=own.out_axis_resources,
            static_argnums=own.static_argnums, static_argnames=own.static_argnames, out_axes=own.out_axes,
            implicit=own.implicit, explicit_sharding=own.explicit_sharding)
        self.jitted = NamedJit(self.fn, axis_resources=self.axis_resources, mesh=self.mesh, in_axes=self.in_axes,
                               **options)
        """A fresh namedjit with the target's options (so its one trace is recorded here)."""

    # -- inputs -----------------------------------------------------------------------
    @functools.cached_property
    def inputs(self) -> Inputs:
        """The traced inputs with their names, as the driver finds them."""
        return collect_inputs(self.args, self.kwargs, self.jitted.config(None))

    @property
    def has_implicit(self) -> bool:
        return self.inputs.has_implicit and self.jitted.implicit == "dense"

    # -- the recorded run -----------------------------------------------------------------
    @functools.cached_property
    def _run(self) -> dict:
        stages: dict = {}

        def hook(stage: str, program: DriverProgram) -> None:
            stages.setdefault(stage, program)

        failure = None
        try:
            with recording(hook), _quiet_materialize():
                lowered, report = self.jitted.lower_for_dump(self.args, self.kwargs)
            stages["lowered"] = (lowered, report, lowered.text_before_annotation)
        except Exception as e:  # noqa: BLE001 -- reported as the stage that failed
            failure = e
        stages["failure"] = failure
        return stages

    def _stage(self, key: str, what: str) -> Any:
        run = self._run
        if key in run:
            return run[key]
        failure = run["failure"]
        if failure is None:
            raise StageError(key, what, RuntimeError(f"namedjit ran no {key} stage for this call"))
        raise StageError(key, what, failure) from failure

    # -- stage 1: the traced program (implicit inputs as their logical avals) ------------
    @property
    def traced(self) -> jax.extend.core.ClosedJaxpr:
        return self._stage("jaxpr", "tracing the function").closed

    # -- stage 2: the implicit-array rewrite ------------------------------------------
    @property
    def rewritten(self) -> tuple[Optional[jax.extend.core.ClosedJaxpr], Optional[ImplicitStats]]:
        """The program with implicit inputs replaced by their parts, and what happened to each use."""
        if not self.has_implicit:
            return None, ImplicitStats()
        program = self._stage("implicit", "the implicit-array rewrite")
        return program.closed, program.implicit_stats

    @property
    def program(self) -> DriverProgram:
        """The program the names pass sees: rewritten if there were implicit arrays."""
        return self._stage("implicit", "the implicit-array rewrite") if self.has_implicit else \
            self._stage("jaxpr", "tracing the function")

    # -- stage 3: names ------------------------------------------------------------------
    @functools.cached_property
    def names(self) -> NamesResult:
        """namedjit's names pass if it ran (``in_axes``), else the same solve on its program."""
        run = self._run
        if "names" in run:
            return run["names"].names
        program = self.program
        try:
            return infer(program.closed, program.in_names)
        except Exception as e:  # noqa: BLE001
            raise StageError("names", "the names pass", e) from e

    # -- stages 4-6: namedjit --------------------------------------------------------------
    @property
    def sharded(self) -> bool:
        return self.mesh is not None and bool(self.axis_resources)

    @property
    def after_passes(self) -> jax.extend.core.ClosedJaxpr:
        """The program after namedjit's passes (sharding constraints and name tags included)."""
        return self._stage("sharding", "the sharding pass").closed

    @property
    def lowered(self):
        """``(annotated Lowered, AnnotationReport, StableHLO text before annotation)``."""
        return self._stage("lowered", "lowering with namedjit")

    @functools.cached_property
    def compiled(self) -> jax.stages.Compiled:
        try:
            return self.lowered[0].compile()
        except Exception as e:  # noqa: BLE001
            raise StageError("hlo", "XLA compilation", e) from e

    # -- stage 7: the cost report ----------------------------------------------------------
    @functools.cached_property
    def costs(self):
        """The :class:`~namax.tools.costs.CostReport` of the compiled program (collectives and memory by name)."""
        from .costs import cost_report

        _ = self.compiled  # a compile failure stays the hlo stage's error
        try:
            return cost_report(self)
        except StageError:
            raise
        except Exception as e:  # noqa: BLE001
            raise StageError("costs", "the cost report", e) from e


@contextlib.contextmanager
def _quiet_materialize() -> Iterator[None]:
    """Silence materialization warnings (the implicit stage counts them)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*implicit args will be materialized")
        yield


# --- stage builders -----------------------------------------------------------------------

_CONSTRAINT = re.compile(r"sharding_constraint\[\n(.*?)\n\s*\]", re.S)
_SPEC = re.compile(r"spec=(P\(.*?\))[,)]")
_HLO_TABLES = re.compile(r"\n(FileNames|FunctionNames|FileLocations|StackFrames)\n.*?(?=\n\n|\Z)", re.S)


def jaxpr_text(closed: Any) -> str:
    """``str(jaxpr)`` with each sharding constraint's parameters shortened to its PartitionSpec.

    >>> import numpy as np, jax, jax.numpy as jnp
    >>> from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    >>> mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> constrained = lambda x: jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P("data")))
    >>> print(jaxpr_text(jax.make_jaxpr(constrained)(jnp.zeros(4))))
    { lambda ; a:f32[4]. let
        b:f32[4] = sharding_constraint[P('data',)] a
      in (b,) }
    """
    def short(m: re.Match) -> str:
        spec = _SPEC.search(m.group(1))
        return f"sharding_constraint[{spec.group(1) if spec else '...'}]"

    return _CONSTRAINT.sub(short, str(closed))


def hlo_text(text: str) -> str:
    """HLO text without the stack-frame tables XLA appends (file names, locations).

    >>> hlo_text('HloModule m\\n\\nENTRY %main {\\n}\\n\\nFileNames\\n1 "model.py"\\n\\nStackFrames\\n1 1')
    'HloModule m\\n\\nENTRY %main {\\n}\\n\\n'
    """
    return re.sub(r"\n{3,}", "\n\n", _HLO_TABLES.sub("", text))



def _inputs_note(p: Program) -> str:
    parts = []
    for item in p.inputs.items:
        x, n = item.value, item.names
        shape = "x".join(map(str, np.shape(x))) or "scalar"
        kind = type(x).__name__ if item.implicit else "array"
        parts.append(f"{kind} {shape}" + (f" ({','.join('_' if a is None else str(a) for a in n)})" if n else ""))
    return "inputs: " + "; ".join(parts) if parts else "inputs: none"


def build_jaxpr(p: Program) -> Stage:
    """Stage 1: the traced program, with a note listing the inputs and their names.

    >>> import namax as nx
    >>> s = build_jaxpr(Program(lambda x: nx.exp(x), (nx.ones(nx.Axis("batch", 2)),)))
    >>> s.key, s.notes, "exp" in s.text
    ('jaxpr', ['inputs: array 2 (batch)'], True)
    """
    return Stage("jaxpr", "the traced program (jax.make_jaxpr)", jaxpr_text(p.traced), notes=[_inputs_note(p)])


def build_implicit(p: Program) -> Stage:
    """Stage 2: the program with implicit inputs replaced by their parts (diffed against stage 1).

    >>> import jax.numpy as jnp
    >>> from namax.quant import Zeros
    >>> s = build_implicit(Program(lambda z, x: z * x, (Zeros(shape=(2,)), jnp.ones(2))))
    >>> s.notes, s.before_label
    (['implicit arrays: 1 use(s) rewritten (mul x1), 0 materialized'], '01-jaxpr')
    """
    if not p.has_implicit:
        return Stage("implicit", "implicit-array rewrite", "no implicit arrays in the arguments: nothing to rewrite")
    rewritten, stats = p.rewritten
    notes = [str(stats)]
    return Stage("implicit", "implicit-array rewrite (namax.quant): implicit inputs replaced by their parts",
                 jaxpr_text(rewritten), notes=notes, before=jaxpr_text(p.traced), before_label="01-jaxpr")


def build_names(p: Program) -> Stage:
    """Stage 3: every value typed by its solved axis names; the coverage report as notes.

    >>> import jax.numpy as jnp
    >>> in_axes = (("batch", "embed"), ("embed", "mlp"))
    >>> s = build_names(Program(lambda x, w: x @ w, (jnp.ones((8, 4)), jnp.ones((4, 2))), in_axes=in_axes))
    >>> s.notes, "f32[batch:8,mlp:2]" in s.text
    (['names pass: every primitive had a rule'], True)
    """
    r = p.names
    notes = [r.coverage_report().splitlines()[0]] + r.coverage_report().splitlines()[1:]
    if p.has_implicit:
        notes.append("solved on the rewritten program (an implicit array's parts of its own shape share its names)")
    return Stage("names", "names pass: every value typed by its axis names", r.pretty(), notes=notes)


def format_type(aval: Any, names: Sequence[Any]) -> str:
    """``f32[batch:8,embed:256]`` from an aval and its solved names.

    >>> import jax, jax.numpy as jnp
    >>> format_type(jax.typeof(jnp.zeros((8, 4, 2))), ("batch", None, ("head", "dim")))
    'f32[batch:8,_:4,head*dim:2]'
    """
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

    for i, (v, names) in enumerate(zip(p.program.closed.jaxpr.invars, r.in_names)):
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
    """Stage 4: the PartitionSpec of every named value and the program after namedjit's passes.

    >>> import numpy as np, jax, namax as nx
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> x = nx.ones(nx.make_axes(batch=4, embed=2))
    >>> p = Program(lambda x: x * 2, (x,), axis_resources={"batch": "data"}, mesh=mesh)
    >>> print("\\n".join(build_sharding(p).text.splitlines()[:3]))
    mesh: data=1; axis resources: batch->data
    named values and their PartitionSpecs:
      input 0                      f32[batch:4,embed:2]                 P('data',)
    """
    if not p.sharded:
        return Stage("sharding", "sharding pass",
                     "no mesh and axis resources given (--mesh, --axis-resources): the sharding pass did not run")
    program = jaxpr_text(p.after_passes)
    table = _spec_table(p)
    text = "\n".join(table) + "\n\nprogram after namedjit's passes (jit(...).trace):\n" + program
    base = "02-implicit" if p.has_implicit else "01-jaxpr"
    return Stage("sharding", "sharding pass: PartitionSpecs from the names, constraints in the program", text,
                 before=jaxpr_text(p.program.closed), before_label=base, after=program)


def build_stablehlo(p: Program) -> Stage:
    """Stage 5: namedjit's annotated StableHLO (diffed against JAX's own lowering).

    >>> import namax as nx
    >>> s = build_stablehlo(Program(lambda x: nx.sin(x), (nx.ones(nx.make_axes(batch=4, embed=2)),)))
    >>> print(s.notes[0])
    named_axes tags: 1, producers named: 1, arguments named: 1, results named: 1
    >>> 'stablehlo.sine %arg0 {mhlo.frontend_attributes = {named_axes = "batch,embed"}}' in s.text
    True
    """
    lowered, report, plain = p.lowered
    return Stage("stablehlo", "annotated StableHLO (namedjit(...).lower())", lowered.as_text(),
                 notes=str(report).splitlines(), before=plain, before_label="jax lowering (before annotation)")


def build_hlo(p: Program) -> Stage:
    """Stage 6: XLA's optimized HLO, its stack-frame tables left out.

    >>> import namax as nx
    >>> s = build_hlo(Program(lambda x: nx.sin(x), (nx.ones(nx.make_axes(batch=4, embed=2)),)))
    >>> s.before_label, "sine" in s.text, "FileNames" in s.text
    ("HLO before XLA's optimizations", True, False)
    """
    before = hlo_text(p.lowered[0].as_text(dialect="hlo"))
    return Stage("hlo", "XLA's optimized HLO (compiled.as_text())", hlo_text(p.compiled.as_text()),
                 notes=["stack-frame tables (FileNames ... StackFrames) omitted"],
                 before=before, before_label="HLO before XLA's optimizations")


def build_costs(p: Program) -> Stage:
    """Stage 7: the cost report by axis name (:mod:`namax.tools.costs`): every collective of
    the compiled HLO with the names it moves, its bytes and the user's source line, and
    memory per device by name. ``stage.report`` is the :class:`~namax.tools.costs.CostReport`.

    >>> import namax as nx
    >>> s = build_costs(Program(lambda x: nx.sin(x), (nx.ones(nx.make_axes(batch=4, embed=2)),)))
    >>> s.report.collectives, s.text.splitlines()[0]
    ([], 'collectives: none')
    """
    report = p.costs
    notes = ["bytes per device; a collective's names come from the equations of its op (metadata op_name and "
             "source line), '~' from the mapping alone, '?' unknown"]
    return Stage("costs", "cost report by axis name: collectives (names moved, source line) and memory per device",
                 str(report), notes=notes, report=report)


BUILDERS: dict[str, Callable[[Program], Stage]] = {
    "jaxpr": build_jaxpr, "implicit": build_implicit, "names": build_names,
    "sharding": build_sharding, "stablehlo": build_stablehlo, "hlo": build_hlo, "costs": build_costs,
}
"""Stage key -> builder, in pipeline order; a new pass adds its builder here."""
