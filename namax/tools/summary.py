"""The summary printed at the end of every dump: names, implicit arrays, collectives, memory, cost.

With the compiled program it also carries the cost report by axis name
(:mod:`namax.tools.costs`): each collective with the names it moves, its bytes and the
user's source line, and the names that dominate memory per device.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import Any, Optional

from ..tag import named_axes_p
from .stages import ImplicitStats, Program, format_type

COLLECTIVE = re.compile(r"\s(all-gather|reduce-scatter|all-reduce|all-to-all|collective-permute)(-start)?\(")
"""A collective op in HLO text (operands such as ``%all-gather.1`` and ``-done`` halves do not match)."""

_SHAPE = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")


def dtype_bits(dtype: str) -> int:
    """Bits per element of an HLO element type (``f32`` -> 32, ``pred`` -> 8, ``token`` -> 0).

    >>> [dtype_bits(t) for t in ("f32", "bf16", "u8", "s4", "pred", "token")]
    [32, 16, 8, 4, 8, 0]
    """
    if dtype == "pred":
        return 8
    m = re.match(r"[a-z]+?(\d+)", dtype)
    return int(m.group(1)) if m else 0


def shape_bytes(dtype: str, dims: str) -> int:
    """Bytes of an HLO array type given as ``dtype`` and ``"512,512"``.

    >>> shape_bytes("f32", "512,512"), shape_bytes("s4", "3"), shape_bytes("f32", "")
    (1048576, 2, 4)
    """
    n = 1
    for d in filter(None, dims.split(",")):
        n *= int(d)
    return (n * dtype_bits(dtype) + 7) // 8


def collective_op(line: str) -> Optional[tuple[re.Match, str, int]]:
    """``(match of the op, its result type text, bytes)`` if the HLO line is a collective
    (group 1 of the match: the kind; group 2: ``-start`` for an async op), else None.

    >>> m, result, nbytes = collective_op("  %ag = f32[8,4]{1,0} all-gather(%p), dimensions={0}")
    >>> m.group(1), result.strip(), nbytes
    ('all-gather', 'f32[8,4]{1,0}', 128)
    """
    m = COLLECTIVE.search(line)
    if m is None:
        return None
    result = line[:m.start()]
    result = result.split("=", 1)[1] if "=" in result else result
    sizes = [shape_bytes(t, d) for t, d in _SHAPE.findall(result)]
    return m, result, (max(sizes) if m.group(2) else sum(sizes)) if sizes else 0


def collectives(hlo_text: str) -> dict[str, tuple[int, int]]:
    """``{kind: (count, bytes)}`` of the collectives in compiled HLO text.

    Bytes come from each op's result type (all arrays of a tuple result; for an async
    ``-start`` op, whose tuple also holds its operand, the largest one).

    >>> collectives("  %all-gather = f32[512,512]{1,0} all-gather(%p), dimensions={0}")
    {'all-gather': (1, 1048576)}
    """
    out: dict[str, list[int]] = {}
    for line in hlo_text.splitlines():
        found = collective_op(line)
        if found is None:
            continue
        m, _, nbytes = found
        entry = out.setdefault(m.group(1), [0, 0])
        entry[0] += 1
        entry[1] += nbytes
    return {k: (c, b) for k, (c, b) in out.items()}


def human(n: float) -> str:
    """``2176`` -> ``'2.1 KiB'``.

    >>> human(512), human(2176), human(3 * 2 ** 30)
    ('512 B', '2.1 KiB', '3.0 GiB')
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@dataclasses.dataclass
class Intermediate:
    """One value of the program: its typed names, size and producing primitive.

    >>> print(Summary(largest=[Intermediate("f32[batch:8,mlp:2]", 64, "dot_general", ("jit",))]))
    names: 0 values; 0 fully named, 0 partly named, 0 without names
    implicit arrays: none
    collectives: none
    largest intermediates:
      f32[batch:8,mlp:2]                             64 B  dot_general in jit
    """

    type: str
    nbytes: int
    primitive: str
    path: tuple


@dataclasses.dataclass
class Summary:
    """The numbers of a dump (see :func:`summarize`); ``str()`` gives the printed summary.

    >>> print(Summary(values=3, fully_named=2, unnamed=1, collectives={"all-reduce": (1, 32)}))
    names: 3 values; 2 fully named, 0 partly named, 1 without names
    implicit arrays: none
    collectives: 1 (all-reduce x1 32 B)
    """

    values: int = 0
    fully_named: int = 0
    partly_named: int = 0
    unnamed: int = 0
    lost_names: Counter = dataclasses.field(default_factory=Counter)
    unknown_primitives: dict = dataclasses.field(default_factory=dict)
    implicit: Optional[ImplicitStats] = None
    collectives: dict = dataclasses.field(default_factory=dict)
    argument_bytes: Optional[int] = None
    output_bytes: Optional[int] = None
    temp_bytes: Optional[int] = None
    flops: Optional[float] = None
    bytes_accessed: Optional[float] = None
    largest: list = dataclasses.field(default_factory=list)
    devices: int = 1
    costs: Any = None
    """The :class:`~namax.tools.costs.CostReport` (collectives and memory by axis name), if made."""
    costs_error: Optional[str] = None

    def __str__(self) -> str:
        lines = [f"names: {self.values} values; {self.fully_named} fully named, {self.partly_named} partly named, "
                 f"{self.unnamed} without names"]
        if self.lost_names:
            lines.append("  names lost (a named input, an output dim without a name) in: " +
                         ", ".join(f"{k} x{v}" for k, v in self.lost_names.most_common()))
        if self.unknown_primitives:
            lines.append("  primitives without a name rule: " +
                         ", ".join(f"{k} x{v}" for k, v in sorted(self.unknown_primitives.items())))
        lines.append(str(self.implicit) if self.implicit is not None else "implicit arrays: none")
        if self.collectives:
            total = sum(c for c, _ in self.collectives.values())
            lines.append(f"collectives: {total} (" + ", ".join(
                f"{k} x{c} {b} B" for k, (c, b) in sorted(self.collectives.items())) + ")")
        else:
            lines.append("collectives: none")
        if self.costs is not None and self.costs.collectives:
            lines.append("  by name moved: " + ", ".join(f"{n} {human(b)}" for n, b in self.costs.bytes_by_name.items()))
            lines += ["  " + str(c) for c in self.costs.collectives]
            if any(c.basis == "mesh" for c in self.costs.collectives):
                lines.append("  (~: names from the mapping alone; see namax.tools.costs)")
        if self.costs_error:
            lines.append(f"cost report by name: {self.costs_error}")
        if self.argument_bytes is not None:
            lines.append(f"memory per device: argument {self.argument_bytes} B, output {self.output_bytes} B, "
                         f"temp {self.temp_bytes} B ({human(self.argument_bytes)} + {human(self.output_bytes)} + "
                         f"{human(self.temp_bytes)}; {self.devices} device(s))")
        if self.costs is not None and self.costs.memory_by_name:
            lines.append("memory per device by axis name: " + ", ".join(
                f"{m.name} {human(m.nbytes)}" for m in self.costs.memory_by_name[:6]))
        if self.flops is not None:
            lines.append(f"cost: {self.flops:.0f} FLOPs, {self.bytes_accessed:.0f} bytes accessed")
        if self.largest:
            lines.append("largest intermediates:")
            for v in self.largest:
                where = f" in {'>'.join(v.path)}" if v.path else ""
                lines.append(f"  {v.type:<40} {human(v.nbytes):>10}  {v.primitive}{where}")
        return "\n".join(lines)


def _is_named(n: Any) -> bool:
    return n is not None and (not isinstance(n, tuple) or all(x is not None for x in n))


def summarize(p: Program, top: int = 5) -> Summary:
    """Count names, implicit rewrites, collectives, memory and cost of a :class:`Program`.

    >>> import namax as nx
    >>> Batch, Embed, Mlp = nx.make_axes(batch=8, embed=4, mlp=2)
    >>> s = summarize(Program(lambda x, w: nx.dot(x, w, axis=Embed), (nx.ones((Batch, Embed)), nx.ones((Embed, Mlp)))))
    >>> s.fully_named, s.unnamed, s.collectives, s.output_bytes, s.flops
    (1, 0, {}, 64, 128.0)
    >>> s.largest[0].type, s.largest[0].primitive
    ('f32[batch:8,mlp:2]', 'dot_general')
    """
    s = Summary(implicit=p.rewritten[1] if p.has_implicit else None)
    r = p.names
    s.unknown_primitives = r.unknown_primitives
    values: list[Intermediate] = []
    for e in r.equations():
        if e.eqn.primitive is named_axes_p:
            continue  # a tag is the value it names
        inputs_named = any(_is_named(n) for names in e.in_names for n in names)
        for v, names in zip(e.eqn.outvars, e.out_names):
            shape = getattr(v.aval, "shape", ())
            if not shape:
                continue
            s.values += 1
            named = [_is_named(n) for n in names]
            if all(named):
                s.fully_named += 1
            elif any(named):
                s.partly_named += 1
            else:
                s.unnamed += 1
            if inputs_named and not all(named):
                s.lost_names[e.primitive] += 1
            nbytes = v.aval.size * v.aval.dtype.itemsize
            values.append(Intermediate(format_type(v.aval, names), nbytes, e.primitive, e.path))
    s.largest = sorted(values, key=lambda v: -v.nbytes)[:top]

    compiled = p.compiled
    s.collectives = collectives(compiled.as_text())
    try:
        s.costs = p.costs
    except Exception as e:  # noqa: BLE001 -- the rest of the summary still holds
        s.costs_error = f"failed: {e}"
    s.devices = p.mesh.devices.size if p.mesh is not None else 1
    mem = compiled.memory_analysis()
    if mem is not None:
        s.argument_bytes = int(mem.argument_size_in_bytes)
        s.output_bytes = int(mem.output_size_in_bytes)
        s.temp_bytes = int(mem.temp_size_in_bytes)
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if cost:
        s.flops = float(cost.get("flops", 0.0))
        s.bytes_accessed = float(cost.get("bytes accessed", 0.0))
    return s
