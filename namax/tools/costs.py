"""The cost report of a mapping, by axis name: which names each collective moves, why, and
which names dominate memory per device.

:func:`cost_report` reads a :class:`~namax.tools.stages.Program`'s compiled HLO and its
names pass:

- one :class:`CollectiveCost` per collective op of the compiled HLO (an async ``-start``
  counted once, its ``-done`` not at all): its kind, its bytes (the result type; for an
  async tuple the largest array -- the rule of :func:`namax.plan.collective_bytes`, so the
  totals by kind equal it), its replica groups as mesh axes, the axis names it moves and
  the user's source line of the op that caused it;
- memory per device: every named value of the program at its per-device size under the
  mapping (a dimension whose name maps to mesh axes is divided by their size, by the rule
  of :func:`namax.partitioning.pspec_for`), summed by axis name, the largest buffers, and
  ``compiled.memory_analysis()``.

How a collective is tied to names (see :func:`cost_report`): the HLO op's metadata names
the primitive (``op_name="jit(f)/transpose(jvp())/dot_general"``) and its stack frame; the
innermost frame of the traced function outside namax and jax is the user's line (an
equation inside a ``jax.numpy`` function's own ``jit`` takes its call's line). The names
pass equations with the same primitive and line (and, when that is ambiguous, the same name
stack and result names; when none has that primitive -- a reshard by a sharding constraint,
a primitive XLA lowered to others -- all equations of that line) are the op's equations.
Their names then say what moved: for an
all-reduce or reduce-scatter the names the equation contracts or reduces, for an all-gather
the name of the gathered dimension (matched by rank and size), for all-to-all and
collective-permute the names on the group's mesh axes; in every case only names mapped to
the mesh axes of the op's replica groups count. When no equation matches (e.g. a reshard
of namax's own sharding constraint) the only name the mapping puts on those mesh axes is
used, marked ``~``; otherwise the names are ``?``.

>>> import namax as nx
>>> from namax.tools.stages import Program
>>> Batch, Embed = nx.make_axes(batch=8, embed=4)
>>> r = cost_report(Program(lambda x: nx.sum(x * 2, Embed), (nx.ones((Batch, Embed)),)))
>>> r.collectives, r.totals["all-reduce"], r.memory_by_name[0].name
([], 0, 'batch')
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
from typing import Any, Optional, Sequence

import numpy as np

from ..partitioning import mesh_axes
from ..tag import named_axes_p
from .stages import Program, format_type
from .summary import _SHAPE, collective_op, human, shape_bytes

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
"""The collective kinds (as :data:`namax.plan.KINDS`)."""

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DRIVER = os.path.join(_PACKAGE, "driver.py")
_LIBRARY_CODE = (os.path.join(_PACKAGE, "models") + os.sep, os.path.join(_PACKAGE, "nn") + os.sep)


# --- reading compiled HLO text --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Location:
    """A source line: ``file`` (full path), ``line``, ``function``; ``str()`` is ``name.py:42``.

    >>> str(Location("/home/me/model.py", 42, "mlp"))
    'model.py:42'
    """

    file: str
    line: int
    function: str = ""

    def __str__(self) -> str:
        path = self.file
        try:
            rel = os.path.relpath(path)
            path = rel if not rel.startswith("..") else os.path.basename(path)
        except ValueError:
            path = os.path.basename(path)
        return f"{path}:{self.line}"


def _is_internal(path: str) -> bool:
    """namax's and jax's own files (not the user's)."""
    path = os.path.abspath(path)
    if path.startswith(_PACKAGE + os.sep):
        return True
    parts = path.split(os.sep)
    return any(p in ("jax", "jaxlib") for p in parts[:-1])


def user_location(frames: Sequence[Location]) -> Optional[Location]:
    """The user's line in a call stack given innermost first: the innermost frame outside
    namax and jax inside the traced function (frames from namax's driver outwards -- the
    code that called ``namedjit`` -- do not count); failing that, the innermost frame of
    namax's own models and layers; None if there is neither.

    >>> inner = [Location(os.path.join(_PACKAGE, "ops", "dot.py"), 102, "_dot2"), Location("/me/model.py", 8, "mlp")]
    >>> str(user_location(inner + [Location(_DRIVER, 299, "flat_fn"), Location("/me/run.py", 3, "<module>")]))
    'model.py:8'
    >>> user_location([Location(_DRIVER, 242, "<lambda>"), Location("/me/run.py", 3, "<module>")]) is None
    True
    """
    inside = []
    for f in frames:
        if os.path.abspath(f.file) == _DRIVER:
            break
        inside.append(f)
    for f in inside:
        if not _is_internal(f.file):
            return f
    for f in inside:
        if os.path.abspath(f.file).startswith(_LIBRARY_CODE):
            return f
    return None


_TABLE = re.compile(r"^(FileNames|FunctionNames|FileLocations|StackFrames)$")


class StackFrames:
    """The stack-frame tables XLA appends to HLO text (``FileNames`` ... ``StackFrames``).

    ``frames(id)`` is the call stack of a ``stack_frame_id``, innermost first (a frame's
    ``parent_frame_id`` is printed one above its parent's id; 0 has none).

    >>> text = '''FileNames
    ... 1 "/me/model.py"
    ... 2 "/x/namax/ops/dot.py"
    ...
    ... FunctionNames
    ... 1 "mlp"
    ... 2 "dot"
    ...
    ... FileLocations
    ... 1 {file_name_id=1 function_name_id=1 line=8 end_line=8 column=16 end_column=16}
    ... 2 {file_name_id=2 function_name_id=2 line=68 end_line=68 column=14 end_column=14}
    ...
    ... StackFrames
    ... 1 {file_location_id=1 parent_frame_id=1}
    ... 2 {file_location_id=2 parent_frame_id=2}
    ... '''
    >>> [str(f) for f in StackFrames(text).frames(2)]
    ['dot.py:68', 'model.py:8']
    """

    def __init__(self, hlo_text: str):
        tables: dict[str, dict[int, str]] = {}
        current = None
        for line in hlo_text.splitlines():
            if _TABLE.match(line):
                current = tables.setdefault(line, {})
                continue
            if current is None:
                continue
            if not line.strip():
                current = None
                continue
            key, _, rest = line.partition(" ")
            if key.isdigit():
                current[int(key)] = rest
        self.files = {k: v.strip('"') for k, v in tables.get("FileNames", {}).items()}
        self.functions = {k: v.strip('"') for k, v in tables.get("FunctionNames", {}).items()}
        self.locations = {k: self._fields(v) for k, v in tables.get("FileLocations", {}).items()}
        self.stack = {k: self._fields(v) for k, v in tables.get("StackFrames", {}).items()}

    @staticmethod
    def _fields(text: str) -> dict[str, int]:
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", text)}

    def frames(self, frame_id: int) -> list[Location]:
        out: list[Location] = []
        seen = set()
        while frame_id in self.stack and frame_id not in seen:
            seen.add(frame_id)
            frame = self.stack[frame_id]
            loc = self.locations.get(frame.get("file_location_id", -1))
            if loc is not None:
                out.append(Location(self.files.get(loc.get("file_name_id"), "?"), loc.get("line", 0),
                                    self.functions.get(loc.get("function_name_id"), "")))
            frame_id = frame.get("parent_frame_id", 0) - 1
        return out


def device_groups(text: str) -> Optional[list[tuple[int, ...]]]:
    """The device groups of a collective's ``replica_groups=`` (explicit ``{{0,1},{2,3}}``,
    iota ``[2,2]<=[4]`` / ``[2,4]<=[4,2]T(1,0)`` or ``mesh['axis_0'=2,'axis_1'=2] {'axis_1'}``,
    the mesh's devices optionally reordered by ``device_ids=([2,2]T(1,0))``), or None if the
    form is not understood.

    >>> device_groups("{{0,1},{2,3}}"), device_groups("[2,2]<=[2,2]T(1,0)")
    ([(0, 1), (2, 3)], [(0, 2), (1, 3)])
    >>> device_groups("mesh['axis_0'=2,'axis_1'=2] {'axis_0'}")
    [(0, 2), (1, 3)]
    >>> device_groups("mesh['axis_0'=2,'axis_1'=2], device_ids=([2,2]T(1,0)) {'axis_0'}")
    [(0, 1), (2, 3)]
    """
    text = text.strip()
    if text.startswith("{"):
        groups = re.findall(r"\{([0-9,\s]*)\}", text[1:-1]) if text.startswith("{{") else []
        return [tuple(int(x) for x in g.split(",") if x.strip()) for g in groups] or None
    m = re.fullmatch(r"\[(\d+),(\d+)\]<=\[([0-9,]+)\](?:T\(([0-9,]+)\))?", text)
    if m:
        ids = _iota(m.group(3), m.group(4))
        return [tuple(int(x) for x in row) for row in ids.reshape(int(m.group(1)), int(m.group(2)))]
    m = re.fullmatch(r"mesh\[([^\]]*)\](?:,\s*device_ids=\(((?:[^()]|\([^()]*\))*)\))?\s*\{([^}]*)\}", text)
    if m:
        axes = re.findall(r"'([^']+)'=(\d+)", m.group(1))
        if ":" in m.group(3) or not axes:
            return None  # sub-axes: not read
        names = [a for a, _ in axes]
        n = math.prod(int(s) for _, s in axes)
        order = _device_ids(m.group(2), n) if m.group(2) is not None else np.arange(n)
        if order is None:
            return None
        ids = order.reshape([int(s) for _, s in axes])
        chosen = re.findall(r"'([^']+)'", m.group(3))
        if any(c not in names for c in chosen):
            return None
        keep = [i for i, a in enumerate(names) if a not in chosen]
        grouped = [names.index(c) for c in chosen]
        ids = ids.transpose(keep + grouped).reshape(-1, math.prod(ids.shape[i] for i in grouped) if grouped else 1)
        return [tuple(int(x) for x in row) for row in ids]
    return None


def _iota(dims: str, transpose: Optional[str]) -> np.ndarray:
    """HLO's iota device list: ``arange`` shaped ``dims`` (``"4,2"``), transposed by ``transpose`` if given."""
    shape = [int(x) for x in dims.split(",")]
    ids = np.arange(math.prod(shape)).reshape(shape)
    return ids.transpose([int(x) for x in transpose.split(",")]) if transpose else ids


def _device_ids(text: str, n: int) -> Optional[np.ndarray]:
    """A mesh's ``device_ids=(...)``: iota ``[4,2]T(1,0)`` or a list ``0,2,1,3`` -> the ids in order."""
    text = text.strip()
    m = re.fullmatch(r"\[([0-9,]+)\](?:T\(([0-9,]+)\))?", text)
    if m:
        ids = _iota(m.group(1), m.group(2)).reshape(-1)
    elif re.fullmatch(r"[0-9,\s]+", text):
        ids = np.array([int(x) for x in text.split(",") if x.strip()])
    else:
        return None
    return ids if ids.size == n else None


def mesh_axes_of(groups: Optional[Sequence[Sequence[int]]], axis_sizes: dict[str, int]) -> Optional[tuple]:
    """The mesh axes whose devices ``groups`` are (a mesh's flat device order: its logical
    device ids), or None when no set of mesh axes gives exactly these groups.

    >>> sizes = {"data": 4, "model": 2}
    >>> mesh_axes_of([(0, 1), (2, 3), (4, 5), (6, 7)], sizes), mesh_axes_of([(0, 2, 4, 6), (1, 3, 5, 7)], sizes)
    (('model',), ('data',))
    >>> mesh_axes_of([tuple(range(8))], sizes), mesh_axes_of([(0, 3)], sizes)
    (('data', 'model'), None)
    """
    if not groups or not axis_sizes:
        return None
    names = list(axis_sizes)
    n = math.prod(axis_sizes.values())
    if any(d >= n for g in groups for d in g):
        return None
    target = {frozenset(g) for g in groups if len(g) > 1}
    ids = np.arange(n).reshape([axis_sizes[a] for a in names])
    for k in range(1, len(names) + 1):
        for chosen in itertools.combinations(range(len(names)), k):
            keep = [i for i in range(len(names)) if i not in chosen]
            rows = ids.transpose(keep + list(chosen)).reshape(-1, math.prod(ids.shape[i] for i in chosen))
            if {frozenset(int(x) for x in r) for r in rows} == target:
                return tuple(names[i] for i in chosen)
    return None


def _pairs_axes(text: str, axis_sizes: dict[str, int]) -> Optional[tuple]:
    """Mesh axes along which a collective-permute's ``{{0,1},{1,0}}`` pairs move data."""
    pairs = [tuple(int(x) for x in p.split(",")) for p in re.findall(r"\{(\d+,\d+)\}", text)]
    if not pairs or not axis_sizes:
        return None
    shape = [axis_sizes[a] for a in axis_sizes]
    n = math.prod(shape)
    if any(d >= n for p in pairs for d in p):
        return None
    moved = set()
    for s, t in pairs:
        for a, i, j in zip(axis_sizes, np.unravel_index(s, shape), np.unravel_index(t, shape)):
            if i != j:
                moved.add(a)
    return tuple(a for a in axis_sizes if a in moved)


@dataclasses.dataclass
class HloCollective:
    """One collective op as read from a line of compiled HLO text."""

    kind: str
    nbytes: int
    shapes: list          # (dtype, dims tuple) of each result array
    dimensions: tuple     # ``dimensions={...}`` (gathered / split dims)
    groups: Optional[list]
    pairs: str
    op_name: str
    frame_id: Optional[int]
    source: Optional[Location]
    named_axes: Optional[tuple]


def read_collectives(hlo_text: str) -> list[HloCollective]:
    """Every collective of compiled HLO text, read by the same rule as
    :func:`namax.tools.summary.collectives` (so their bytes add up to its totals).

    >>> c, = read_collectives('  %ag = f32[8,4]{1,0} all-gather(%p), replica_groups={{0,1}}, dimensions={0}, '
    ...                       'metadata={op_name="jit(f)/dot_general" source_file="/me/m.py" source_line=7}')
    >>> c.kind, c.nbytes, c.dimensions, c.groups, c.op_name, str(c.source)
    ('all-gather', 128, (0,), [(0, 1)], 'jit(f)/dot_general', 'm.py:7')
    """
    out = []
    for line in hlo_text.splitlines():
        op = collective_op(line)
        if op is None:
            continue
        m, result, nbytes = op
        found = _SHAPE.findall(result)
        sizes = [shape_bytes(t, d) for t, d in found]
        shapes = [(t, tuple(int(x) for x in d.split(",") if x)) for t, d in found]
        if m.group(2) and shapes:  # an async tuple holds operand and result: keep the largest
            shapes = [shapes[sizes.index(max(sizes))]]
        rest = line[m.end():]
        dims = re.search(r"\bdimensions=\{([0-9,]*)\}", rest)
        groups = re.search(r"replica_groups=(\{\{.*?\}\}|\{\}|\[[0-9,]+\]<=\[[0-9,]+\](?:T\([0-9,]+\))?|"
                           r"mesh\[[^\]]*\](?:,\s*device_ids=\((?:[^()]|\([^()]*\))*\))?\s*\{[^}]*\})", rest)
        pairs = re.search(r"source_target_pairs=(\{\{.*?\}\})", rest)
        op_name = re.search(r'op_name="([^"]*)"', rest)
        frame = re.search(r"stack_frame_id=(\d+)", rest)
        src_file = re.search(r'source_file="([^"]*)"', rest)
        src_line = re.search(r"source_line=(\d+)", rest)
        named = re.search(r'named_axes="([^"]*)"', rest)
        out.append(HloCollective(
            kind=m.group(1), nbytes=nbytes, shapes=shapes,
            dimensions=tuple(int(x) for x in dims.group(1).split(",") if x) if dims else (),
            groups=device_groups(groups.group(1)) if groups else None, pairs=pairs.group(1) if pairs else "",
            op_name=op_name.group(1) if op_name else "", frame_id=int(frame.group(1)) if frame else None,
            source=Location(src_file.group(1), int(src_line.group(1))) if src_file and src_line else None,
            named_axes=tuple(named.group(1).split(",")) if named else None))
    return out


# --- the report -----------------------------------------------------------------------------


@dataclasses.dataclass
class CollectiveCost:
    """One collective of the compiled program, tied back to names and a source line.

    ``names``: the axis names it moves (``("?",)`` when unknown); ``basis``: ``"op"`` (from
    the equations of its op), ``"mesh"`` (the only name on its mesh axes) or ``"?"``.

    >>> print(CollectiveCost("all-gather", 2 * 2**20, "f32[512,1024]", ("model",), ("embed",), "op",
    ...                      Location("/me/model.py", 42), "dot_general"))
    all-gather             2.0 MiB  f32[512,1024]      over model      moves embed       model.py:42  dot_general
    """

    kind: str
    nbytes: int
    type: str
    mesh_axes: Optional[tuple]
    names: tuple
    basis: str
    source: Optional[Location]
    primitive: str
    op_name: str = ""
    arrays: int = 1

    @property
    def moves(self) -> str:
        text = ",".join(self.names) if self.names else "?"
        return text + ("~" if self.basis == "mesh" else "")

    def __str__(self) -> str:
        over = "+".join(self.mesh_axes) if self.mesh_axes else "?"
        kind = self.kind + (f" x{self.arrays}" if self.arrays > 1 else "")
        where = str(self.source) if self.source is not None else "?"
        return (f"{kind:<18} {human(self.nbytes):>11}  {self.type:<18} over {over:<10} moves {self.moves:<11} "
                f"{where}  {self.primitive}")


@dataclasses.dataclass
class NameMemory:
    """Per-device bytes of the named values whose dimensions include ``name``."""

    name: str
    nbytes: int
    values: int
    largest: str
    largest_bytes: int
    mesh_axes: Optional[Any] = None


@dataclasses.dataclass
class Buffer:
    """A named value of the program at its per-device size under the mapping."""

    type: str
    spec: str
    nbytes: int
    global_bytes: int
    primitive: str
    source: Optional[Location]


@dataclasses.dataclass
class CostReport:
    """Collectives by the names they move and memory per device by name (see :func:`cost_report`).

    >>> r = CostReport(devices=1)
    >>> print(r)
    collectives: none
    memory per device by axis name: no named values
    """

    collectives: list = dataclasses.field(default_factory=list)
    totals: dict = dataclasses.field(default_factory=lambda: {k: 0 for k in KINDS})
    memory_by_name: list = dataclasses.field(default_factory=list)
    buffers: list = dataclasses.field(default_factory=list)
    argument_bytes: Optional[int] = None
    output_bytes: Optional[int] = None
    temp_bytes: Optional[int] = None
    devices: int = 1
    mesh: str = ""
    mapping: str = ""

    @property
    def bytes_by_name(self) -> dict[str, int]:
        """Collective bytes by the name moved (an op moving two names counts for each; ``?`` for unknown)."""
        out: dict[str, int] = {}
        for c in self.collectives:
            for n in c.names or ("?",):
                out[n] = out.get(n, 0) + c.nbytes
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def lines(self, top: int = 8) -> list[str]:
        lines = []
        if self.mesh:
            lines.append(f"mesh: {self.mesh}; axis resources: {self.mapping or 'none'}")
        if self.collectives:
            total = sum(self.totals.values())
            lines.append(f"collectives: {len(self.collectives)}, {human(total)} per device (" + ", ".join(
                f"{k} {human(b)}" for k, b in self.totals.items() if b) + ")")
            lines.append("  by name moved: " + ", ".join(f"{n} {human(b)}" for n, b in self.bytes_by_name.items()))
            for c in self.collectives:
                lines.append("  " + str(c))
            if any(c.basis == "mesh" for c in self.collectives):
                lines.append("  (~: no equation of the op's line says; the only name the mapping puts on those mesh axes)")
        else:
            lines.append("collectives: none")
        if self.argument_bytes is not None:
            lines.append(f"memory per device (XLA): argument {human(self.argument_bytes)}, output "
                         f"{human(self.output_bytes)}, temp {human(self.temp_bytes)} ({self.devices} device(s))")
        if self.memory_by_name:
            lines.append("memory per device by axis name (named values whose dims include the name):")
            for m in self.memory_by_name[:top]:
                on = "" if m.mesh_axes is None else f" (-> {'+'.join(mesh_axes(m.mesh_axes))})"
                lines.append(f"  {m.name + on:<24} {human(m.nbytes):>11} in {m.values:>3} value(s); "
                             f"largest {m.largest} {human(m.largest_bytes)}")
            lines.append("largest buffers per device:")
            for b in self.buffers[:min(top, 5)]:
                where = f" {b.source}" if b.source is not None else ""
                lines.append(f"  {b.type:<36} {b.spec:<22} {human(b.nbytes):>11}  {b.primitive}{where}")
        else:
            lines.append("memory per device by axis name: no named values")
        return lines

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _plain(n: Any) -> list[str]:
    if n is None:
        return []
    if isinstance(n, tuple):
        return [x for m in n for x in _plain(m)]
    return [str(n)]


@dataclasses.dataclass
class _Eqn:
    primitive: str
    name_stack: str
    source: Optional[Location]
    ins: list      # (names tuple, shape tuple) of each array input
    outs: list


def _eqn_location(eqn: Any) -> Optional[Location]:
    tb = getattr(getattr(eqn, "source_info", None), "traceback", None)
    if tb is None:  # no source info: no line
        return None
    frames = [Location(f.file_name, f.line_num, f.function_name) for f in tb.frames]  # innermost first
    return user_location(frames)


def op_primitive(op_name: str) -> str:
    """The primitive at the end of an HLO ``op_name`` (a name stack may leave it a closing
    parenthesis of a transform such as ``transpose(jvp(...))``).

    >>> op_primitive("jit(f)/transpose(jvp(loss))/dot_general)"), op_primitive("jit(f)/tanh"), op_primitive("")
    ('dot_general', 'tanh', '')
    """
    last = op_name.rsplit("/", 1)[-1] if op_name else ""
    while last.endswith(")") and last.count(")") > last.count("("):
        last = last[:-1]
    return last


class _Attributor:
    """Ties HLO collectives to the names pass's equations and the mapping."""

    def __init__(self, p: Program, eqns: list[_Eqn], values: list):
        self.mapping = dict(p.axis_resources or {}) if p.sharded else {}
        self.axis_sizes = dict(zip(p.mesh.axis_names, p.mesh.devices.shape)) if p.mesh is not None else {}
        self.by_key: dict[tuple, list[_Eqn]] = {}
        self.by_line: dict[tuple, list[_Eqn]] = {}
        self.by_primitive: dict[str, list[_Eqn]] = {}
        for e in eqns:
            if e.source is not None:
                self.by_key.setdefault((e.primitive, e.source.file, e.source.line), []).append(e)
                self.by_line.setdefault((e.source.file, e.source.line), []).append(e)
            self.by_primitive.setdefault(e.primitive, []).append(e)
        self.values = values  # (names, shape) of every named value

    def on(self, name: str, axes: Optional[tuple]) -> bool:
        """``name`` is mapped to (some of) the mesh ``axes``."""
        mine = mesh_axes(self.mapping.get(name))
        return bool(mine) and (axes is None or bool(set(mine) & set(axes)))

    def eqns_of(self, c: HloCollective, source: Optional[Location]) -> list[_Eqn]:
        primitive = op_primitive(c.op_name)
        if not primitive or source is None:
            return []
        found = self.by_key.get((primitive, source.file, source.line), [])
        if not found:  # a reshard (sharding_constraint) or a primitive lowered to others: the line's equations
            found = self.by_line.get((source.file, source.line), [])
        stack = c.op_name.split("/")[1:-1]
        same_stack = [e for e in found if e.name_stack == "/".join(stack)]
        if same_stack:
            found = same_stack
        if c.named_axes is not None and len(found) > 1:
            named = [e for e in found if any(tuple(_name(n) for n in o) == c.named_axes for o, _ in e.outs)]
            found = named or found
        return found

    def names(self, c: HloCollective, eqns: list[_Eqn], axes: Optional[tuple]) -> tuple[tuple, str]:
        found: list[str] = []

        def add(n):
            if n not in found:
                found.append(n)

        shape = c.shapes[0][1] if c.shapes else ()
        for e in eqns:
            if c.kind in ("all-reduce", "reduce-scatter"):
                outs = {x for names, _ in e.outs for n in names for x in _plain(n)}
                for names, _ in e.ins:
                    for n in names:
                        for x in _plain(n):
                            if x not in outs and self.on(x, axes):
                                add(x)
            elif c.kind == "all-gather":
                for names, sizes in e.ins + e.outs:
                    for n in self._gathered(names, sizes, shape, c.dimensions, axes):
                        add(n)
            else:
                for names, _ in e.ins + e.outs:
                    for n in names:
                        for x in _plain(n):
                            if self.on(x, axes):
                                add(x)
        if found:
            return tuple(found), "op"
        if axes is None:
            return ("?",), "?"
        candidates = [n for n in self._mapped_names() if self.on(n, axes)]
        if c.kind == "all-gather":
            shaped = {n for names, sizes in self.values for n in self._gathered(names, sizes, shape, c.dimensions, axes)}
            candidates = [n for n in candidates if n in shaped]
        if len(candidates) == 1:
            return (candidates[0],), "mesh"
        return ("?",), "?"

    def _mapped_names(self) -> list[str]:
        seen = []
        for names, _ in self.values:
            for n in names:
                for x in _plain(n):
                    if x in self.mapping and x not in seen:
                        seen.append(x)
        return seen

    def _gathered(self, names: tuple, sizes: tuple, local: tuple, dims: tuple, axes: Optional[tuple]) -> list[str]:
        """The names at the gathered ``dims`` of a value that ``local`` (the gathered result) is a block of."""
        if len(names) != len(local) or any(s % l for s, l in zip(sizes, local) if l):
            return []
        out = []
        for d in dims:
            if d < len(names):
                out += [x for x in _plain(names[d]) if self.on(x, axes)]
        return out


def _name(n: Any) -> str:
    return "*".join(_plain(n)) if isinstance(n, tuple) else ("_" if n is None else str(n))


def cost_report(p: Program, top: int = 8) -> CostReport:
    """The cost report of a :class:`Program`: collectives by the names they move and their
    source lines, memory per device by name (see the module docstring for the rules).

    The totals by kind are those of :func:`namax.plan.collective_bytes` on the same HLO.

    >>> import numpy as np, jax, namax as nx
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> Batch, Embed, Mlp = nx.make_axes(batch=8, embed=4, mlp=16)
    >>> x, w = nx.ones((Batch, Embed)), nx.ones((Embed, Mlp))
    >>> r = cost_report(Program(lambda x, w: nx.dot(x, w, axis=Embed), (x, w),
    ...                         axis_resources={"batch": "data"}, mesh=mesh))
    >>> [(m.name, m.nbytes) for m in r.memory_by_name]
    [('mlp', 768), ('batch', 640), ('embed', 384)]
    >>> r.buffers[0].type, r.buffers[0].spec, r.buffers[0].nbytes
    ('f32[batch:8,mlp:16]', "P('data',)", 512)
    """
    from ..partitioning import pspec_for

    compiled = p.compiled
    text = compiled.as_text()
    mesh = p.mesh
    sharded = p.sharded
    axis_sizes = dict(zip(mesh.axis_names, mesh.devices.shape)) if mesh is not None else {}
    mapping = dict(p.axis_resources or {}) if sharded else {}

    # the named values and equations of the program
    r = p.names
    eqns: list[_Eqn] = []
    values: list = []
    buffers: list[Buffer] = []

    def per_device(names: tuple, aval: Any) -> tuple[int, str]:
        total = aval.size * aval.dtype.itemsize
        if not sharded:
            return total, "P()"
        plain = tuple(n if isinstance(n, str) else None for n in names)
        spec = pspec_for(plain, aval.shape, mapping, mesh, strict=False, what="value")
        split = math.prod(axis_sizes[a] for e in spec for a in mesh_axes(e))
        return total // split, str(spec)

    def add_value(names: tuple, aval: Any, primitive: str, source: Optional[Location]) -> None:
        if not getattr(aval, "shape", ()) or not any(_plain(n) for n in names):
            return
        values.append((tuple(names), tuple(aval.shape)))
        nbytes, spec = per_device(names, aval)
        buffers.append(Buffer(format_type(aval, names), spec, nbytes, aval.size * aval.dtype.itemsize, primitive,
                              source))

    closed = p.program.closed
    for i, (v, names) in enumerate(zip(closed.jaxpr.invars, r.in_names)):
        add_value(tuple(names), v.aval, f"input {i}", None)
    enclosing: list[Optional[Location]] = []  # the line of the equation each nesting level is inside
    for e in r.equations():
        depth = len(e.path)
        source = _eqn_location(e.eqn)
        if source is None and 0 < depth <= len(enclosing):  # inside jnp's jit: the enclosing call's line
            source = enclosing[depth - 1]
        del enclosing[depth:]
        enclosing.append(source)
        if e.eqn.primitive is named_axes_p:
            continue
        shaped = lambda vs, ns: [(tuple(n), tuple(v.aval.shape)) for v, n in zip(vs, ns)  # noqa: E731
                                 if getattr(v.aval, "shape", ())]
        eqns.append(_Eqn(e.primitive, str(e.eqn.source_info.name_stack), source,
                         shaped(e.eqn.invars, e.in_names), shaped(e.eqn.outvars, e.out_names)))
        for v, names in zip(e.eqn.outvars, e.out_names):
            add_value(tuple(names), v.aval, e.primitive, source)

    report = CostReport(devices=mesh.devices.size if mesh is not None else 1)
    if mesh is not None:
        report.mesh = ", ".join(f"{a}={s}" for a, s in axis_sizes.items())
        report.mapping = ", ".join(f"{k}->{v if isinstance(v, str) else '+'.join(v)}" for k, v in mapping.items())

    # collectives
    frames = StackFrames(text)
    attributor = _Attributor(p, eqns, values)
    for c in read_collectives(text):
        report.totals[c.kind] = report.totals.get(c.kind, 0) + c.nbytes
        source = c.source if c.source is not None else (
            user_location(frames.frames(c.frame_id)) if c.frame_id is not None else None)
        if c.source is not None and not os.path.isabs(c.source.file):
            source = c.source
        axes = mesh_axes_of(c.groups, axis_sizes) if c.kind != "collective-permute" else \
            _pairs_axes(c.pairs, axis_sizes)
        matched = attributor.eqns_of(c, source)
        names, basis = attributor.names(c, matched, axes)
        dtype, dims = c.shapes[0] if c.shapes else ("?", ())
        report.collectives.append(CollectiveCost(
            kind=c.kind, nbytes=c.nbytes, type=f"{dtype}[{','.join(map(str, dims))}]", mesh_axes=axes,
            names=names, basis=basis, source=source, primitive=op_primitive(c.op_name) or "?",
            op_name=c.op_name, arrays=len(c.shapes)))

    # memory by name
    by_name: dict[str, NameMemory] = {}
    for (names, _), b in zip(values, buffers):
        for n in dict.fromkeys(x for m in names for x in _plain(m)):
            m = by_name.get(n)
            if m is None:
                m = by_name[n] = NameMemory(n, 0, 0, b.type, b.nbytes, mapping.get(n))
            m.nbytes += b.nbytes
            m.values += 1
            if b.nbytes > m.largest_bytes:
                m.largest, m.largest_bytes = b.type, b.nbytes
    report.memory_by_name = sorted(by_name.values(), key=lambda m: (-m.nbytes, m.name))
    report.buffers = sorted(buffers, key=lambda b: -b.nbytes)[:top]
    mem = compiled.memory_analysis()
    if mem is not None:
        report.argument_bytes = int(mem.argument_size_in_bytes)
        report.output_bytes = int(mem.output_size_in_bytes)
        report.temp_bytes = int(mem.temp_size_in_bytes)
    return report


__all__ = ["CollectiveCost", "CostReport", "Location", "NameMemory", "Buffer", "cost_report", "device_groups",
           "mesh_axes_of", "read_collectives", "user_location"]
