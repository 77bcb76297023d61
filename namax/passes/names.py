"""Axis-name propagation over jaxprs, solved as unification over every dimension.

Every dimension of every var the walk meets is a *node*. The walk (a
:class:`~namax.interpreter.Interpreter` whose values are tuples of nodes, one per dim)
applies a rule per primitive (:mod:`namax.passes.name_rules`) that says which output dims
are which input dims; a union-find joins them. Names enter as *labels* on nodes: from the
names given for the inputs and from ``named_axes`` tags. Because the constraints are
symmetric, one solve sends names forward and backward, through every sub-jaxpr (``jit``,
``scan``, ``cond``, ``while``, ``remat2``, ``custom_jvp_call``, ``custom_vjp_call``).

Three refinements:

- A tag's output is not unified with its input (a tag may rename: ``x.rename({"position":
  "key_position"})`` is a tag after a no-op). Input and output are *linked* instead: after
  the solve, a name crosses a link only to a side that has none, so a var named only by a
  later tag still gets that name.
- ``reshape`` merges make *composite* nodes: a merged dim's name is the tuple of its parts'
  names, e.g. ``('batch', 'position')``; a split of a composite recovers the parts. Two
  composites of the same parts, in order, are one dim (a merge undoes a split: ``embed ->
  (heads, head_dim) -> embed`` is ``embed`` again).
- A composite and its *major* (first) part are linked like a tag's input and output: a
  name crosses from the whole to the major part (``embed:768 -> (heads:12, head_dim:64)``
  names the heads dim ``embed``), and from the major part to a whole whose other parts
  are unnamed. Sharding a dim in blocks over ``n`` devices is sharding its major part
  over them (when ``n`` divides it), so a mapping for the name places both alike; the two
  sizes differ, so this is a link, never a unification, and ``check_sizes`` does not
  apply to a name carried this way.

Two names meeting on one node raise :class:`AxisNameConflictError` naming both axes,
where each came from and the equation where they met. One name on two sizes raises too,
but only with ``check_sizes=True``: namax's own slicing keeps an axis's name at a new size
(``x["position", 0:2]`` is still ``position``), so by default it is allowed. Primitives without a rule get fresh (unnamed) outputs, never wrong ones,
and are counted in :attr:`NamesResult.unknown_primitives`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
from jax.extend import core as jcore
from jax.extend.source_info_util import summarize

from ..interpreter import Interpreter
from .name_rules import RULES as _CORE_RULES
from .name_rules_linalg import LINALG_RULES

RULES = {**_CORE_RULES, **LINALG_RULES}
"""Every names-pass rule: shape, dot and control-flow primitives, then linalg, FFT and collectives."""

AxisName = Union[str, tuple, None]
Origin = Union[str, Callable[[], str]]
"""Where a label or a constraint came from; a callable is only formatted for an error message."""


def _text(origin: Origin) -> str:
    return origin() if callable(origin) else origin
"""A dim's name: a string, a tuple of part names for a merged dim, or None if unknown."""


class AxisNameConflictError(ValueError):
    """Two different axis names met on one dimension, or one name was used with two sizes.

    >>> import jax, jax.numpy as jnp
    >>> cj = jax.make_jaxpr(lambda x, y: x + y)(jnp.ones(2), jnp.ones(2))
    >>> infer(cj, [("batch",), ("embed",)])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    namax.passes.names.AxisNameConflictError: Axis name conflict at `add`(f32[2], f32[2]) at ...: one dimension (size 2) is named 'embed' (input 1, dimension 0) and 'batch' (input 0, dimension 0)
    """


# --- the union-find ------------------------------------------------------------------


class DimSolver:
    """Union-find over dimension nodes, with a name label and optional parts per class.

    >>> s = DimSolver()
    >>> a, b, c = s.fresh(4), s.fresh(4), s.fresh(4)
    >>> s.label(a, "batch", "input 0")
    >>> s.unify(a, b, "an add")
    >>> s.name(b), s.name(c), s.size(c)
    ('batch', None, 4)
    """

    def __init__(self, check_sizes: bool = False):
        self.check_sizes = check_sizes
        self._parent: list[int] = []
        self._size: list[int] = []
        self._label: dict[int, tuple[str, Origin]] = {}  # root -> (name, where it came from)
        self._parts: dict[int, tuple[int, ...]] = {}  # root -> nodes of a merged dim
        self._cuts: dict[int, frozenset] = {}  # root -> {(source node, start, stop)} it is a range of
        self._merges: list[tuple[int, tuple[int, ...], Origin]] = []  # every (whole, parts) recorded
        self._name_sizes: dict[str, tuple[int, Origin]] = {}

    def fresh(self, size: int) -> int:
        self._parent.append(len(self._parent))
        self._size.append(int(size))
        return len(self._parent) - 1

    def size(self, node: int) -> int:
        return self._size[node]

    def find(self, node: int) -> int:
        root = node
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[node] != root:
            self._parent[node], node = root, self._parent[node]
        return root

    def label_of(self, node: int) -> Optional[str]:
        entry = self._label.get(self.find(node))
        return entry[0] if entry else None

    def label(self, node: int, name: str, origin: Origin) -> None:
        """Give ``node``'s class the name ``name``; raises if it already has another."""
        if self.check_sizes:
            self._check_size(name, self._size[node], origin)
        root = self.find(node)
        old = self._label.get(root)
        if old is None:
            self._label[root] = (name, origin)
        elif old[0] != name:
            raise AxisNameConflictError(
                f"Axis name conflict: one dimension is named both {old[0]!r} ({_text(old[1])}) and {name!r} ({_text(origin)})"
            )

    def _check_size(self, name: str, size: int, origin: Origin) -> None:
        seen = self._name_sizes.setdefault(name, (size, origin))
        if seen[0] != size:
            raise AxisNameConflictError(
                f"Axis {name!r} has size {seen[0]} ({_text(seen[1])}) but size {size} ({_text(origin)})"
            )

    def unify(self, a: int, b: int, where: Origin) -> None:
        """Join the classes of ``a`` and ``b`` (no-op when their sizes differ: broadcasting)."""
        work = [(a, b)]
        while work:
            a, b = (self.find(n) for n in work.pop())
            if a == b or self._size[a] != self._size[b]:
                continue
            la, lb = self._label.get(a), self._label.get(b)
            if la and lb and la[0] != lb[0]:
                raise AxisNameConflictError(
                    f"Axis name conflict at {_text(where)}: one dimension (size {self._size[a]}) is named "
                    f"{la[0]!r} ({_text(la[1])}) and {lb[0]!r} ({_text(lb[1])})"
                )
            self._parent[b] = a
            if la is None and lb is not None:
                self._label[a] = lb
            self._label.pop(b, None)
            if b in self._cuts:
                self._cuts[a] = self._cuts.get(a, frozenset()) | self._cuts.pop(b)
            pa, pb = self._parts.get(a), self._parts.pop(b, None)
            if pa is None and pb is not None:
                self._parts[a] = pb
            elif pa is not None and pb is not None and [self._size[n] for n in pa] == [self._size[n] for n in pb]:
                work.extend(zip(pa, pb))

    def compose(self, node: int, parts: Sequence[int], where: Origin) -> None:
        """Record that ``node`` is the merge of ``parts`` (in order)."""
        self._merges.append((node, tuple(parts), where))
        root = self.find(node)
        old = self._parts.get(root)
        if old is None:
            self._parts[root] = tuple(parts)
        elif [self._size[n] for n in old] == [self._size[n] for n in parts]:
            for x, y in zip(old, parts):
                self.unify(x, y, where)

    def cut(self, node: int, source: int, start: int, stop: int) -> None:
        """Record that ``node`` is the range ``[start, stop)`` of dim ``source`` (a slice or split)."""
        root = self.find(node)
        self._cuts[root] = self._cuts.get(root, frozenset()) | {(source, start, stop)}

    def joined(self, pieces: Sequence[int]) -> Optional[int]:
        """The dim that ``pieces`` put back together whole, if any.

        Each piece must be one of the recorded ranges of its class (a class can hold several:
        the two halves unpacked from one packed byte array are one class), each range of a
        single source dim used once, and the ranges must cover that dim exactly, in any order.
        """
        options = [{(self.find(c[0]), c[1], c[2]) for c in self._cuts.get(self.find(n), ())} for n in pieces]
        if not options or not all(options) or len(pieces) > 8:
            return None
        for source in {c[0] for c in options[0]}:
            ranges = [sorted((c[1], c[2]) for c in opts if c[0] == source) for opts in options]
            if all(ranges) and self._covers(ranges, self._size[source]):
                return source
        return None

    @staticmethod
    def _covers(ranges: Sequence[Sequence[tuple[int, int]]], size: int) -> bool:
        """Whether one range per piece can be picked so that the picks tile ``[0, size)``."""
        def search(covered: int, left: frozenset) -> bool:
            if not left:
                return covered == size
            return any(search(stop, left - {i}) for i in left for start, stop in ranges[i] if start == covered)
        return search(0, frozenset(range(len(ranges))))

    def name(self, node: int) -> AxisName:
        """The solved name: the class's label, else its parts' names, else None."""
        root = self.find(node)
        if root in self._label:
            return self._label[root][0]
        parts = self._parts.get(root)
        if parts is None:
            return None
        flat: list = []
        for p in parts:
            n = self.name(p)
            flat.extend(n if isinstance(n, tuple) else (n,))
        return tuple(flat) if any(n is not None for n in flat) else None

    def close(self) -> None:
        """Unify composites made of the same parts, in order, until nothing changes.

        ``x.reshape(b, s, h, d)`` then ``.reshape(b, s, h * d)`` gives back ``x``'s last dim;
        so does merging ``(h, d)`` that came through a transpose, a dot or a softmax, as long
        as the parts are still the same axes.
        """
        changed = True
        while changed:
            changed, first = False, {}
            for node, parts, where in self._merges:
                other = first.setdefault(tuple(self.find(p) for p in parts), node)
                a, b = self.find(other), self.find(node)
                if a != b and self._size[a] == self._size[b]:  # equal (same parts); unify skips others
                    self.unify(a, b, where)
                    changed = True

    def spread_links(self, links: Sequence[tuple[int, int]]) -> None:
        """Copy names across tag links, and between composites and their major parts, to
        sides that have none, until nothing changes."""
        changed = True
        while changed:
            changed = False
            for a, b in links:
                la, lb = self._label.get(self.find(a)), self._label.get(self.find(b))
                if la and not lb:
                    self.label(b, la[0], la[1])
                    changed = True
                elif lb and not la:
                    self.label(a, lb[0], lb[1])
                    changed = True
            for whole, parts, _ in self._merges:
                changed |= self._spread_major(whole, parts)

    def _spread_major(self, whole: int, parts: Sequence[int]) -> bool:
        """Carry a name from ``whole`` to its major part or back; True if one moved."""
        lw, lm = self._label.get(self.find(whole)), self._label.get(self.find(parts[0]))
        if lw and not lm:
            self._label[self.find(parts[0])] = (lw[0], lambda: f"{_text(lw[1])}, carried to a major part")
            return True
        if lm and not lw and all(self.name(p) is None for p in parts[1:]):
            self._label[self.find(whole)] = (lm[0], lambda: f"{_text(lm[1])}, carried from a major part")
            return True
        return False


# --- the walk ------------------------------------------------------------------------


@dataclasses.dataclass
class _Enter:
    jaxpr: jcore.Jaxpr
    depth: int
    title: str
    consts: list
    args: list


@dataclasses.dataclass
class _Eqn:
    eqn: jcore.JaxprEqn
    depth: int
    path: tuple
    ins: list
    outs: Optional[list] = None


@dataclasses.dataclass
class _Exit:
    jaxpr: jcore.Jaxpr
    depth: int
    outs: list


def _shape(aval: Any) -> tuple:
    return tuple(getattr(aval, "shape", ()))


def _where(eqn: jcore.JaxprEqn, path: Sequence[str]) -> str:
    operands = ", ".join(v.aval.str_short(short_dtypes=True) if hasattr(v.aval, "str_short") else "?" for v in eqn.invars)
    inside = f" inside {' > '.join(path)}" if path else ""
    return f"`{eqn.primitive.name}`({operands}) at {summarize(eqn.source_info)}{inside}"


class NamesInterpreter(Interpreter):
    """The names pass's walk: values are tuples of dimension nodes of a :class:`DimSolver`.

    >>> import jax, jax.numpy as jnp
    >>> walk = NamesInterpreter()
    >>> x = walk.fresh(jax.typeof(jnp.ones((2, 3))))
    >>> walk.label(x[0], "batch")
    >>> (y,) = walk.run(jax.make_jaxpr(lambda x: jnp.sum(jnp.exp(x), axis=1))(jnp.ones((2, 3))), x)
    >>> walk.solver.name(y[0]), dict(walk.unknown)
    ('batch', {})
    """

    def __init__(self, rules: Optional[Mapping[Any, Any]] = None, check_sizes: bool = False):
        super().__init__(RULES if rules is None else rules, default=NamesInterpreter._unknown,
                         literal=self._literal_dims)
        self.solver = DimSolver(check_sizes)
        self.links: list[tuple[int, int]] = []
        self.unknown: Counter = Counter()
        self.events: list = []
        self.visits: dict[Any, list[tuple]] = {}
        self.notes: dict[Any, list] = {}
        self._path: list[str] = []
        self._eqns: list[jcore.JaxprEqn] = []
        self._title = "main"

    # helpers for rules
    def fresh_dim(self, size: int) -> int:
        return self.solver.fresh(size)

    def fresh(self, aval: Any) -> tuple:
        """New, unconstrained nodes for every dim of ``aval``."""
        return tuple(self.solver.fresh(s) for s in _shape(aval))

    def size(self, node: int) -> int:
        return self.solver.size(node)

    def where(self) -> Origin:
        """The current equation and its enclosing primitives, formatted only if an error needs it."""
        if not self._eqns:
            return "the inputs"
        eqn, path = self._eqns[-1], tuple(self._path[:-1])
        return lambda: _where(eqn, path)

    def unify(self, a: int, b: int) -> None:
        self.solver.unify(a, b, self.where())

    def unify_dims(self, xs: Sequence[int], ys: Sequence[int]) -> None:
        for a, b in zip(xs, ys):
            self.solver.unify(a, b, self.where())

    def cut(self, node: int, source: int, start: int, stop: int) -> None:
        self.solver.cut(node, source, start, stop)

    def compose(self, node: int, parts: Sequence[int]) -> None:
        self.solver.compose(node, parts, self.where())

    def label(self, node: int, name: str) -> None:
        where = self.where()
        self.solver.label(node, name, lambda: f"tagged by {_text(where)}")

    def link(self, a: int, b: int) -> None:
        self.links.append((a, b))

    def recall(self, key: Any, record: Any) -> list:
        """The records noted under ``key`` before, then ``record`` noted too.

        Lets a rule pair an equation with an earlier one, such as a scatter-add with the
        gather it transposes (keyed on their shared index array's dimension nodes).
        """
        earlier = self.notes.setdefault(key, [])
        out = list(earlier)
        earlier.append(record)
        return out

    def eval_sub(self, jaxpr: Union[jcore.Jaxpr, jcore.ClosedJaxpr], title: str, args: Sequence[tuple]) -> list:
        """Walk a sub-jaxpr (closed or open) on ``args``; returns its outputs' nodes."""
        self._title = f"{self._eqns[-1].primitive.name} {title}" if self._eqns else title
        if isinstance(jaxpr, jcore.ClosedJaxpr):
            return self.run(jaxpr, *args)
        return self.eval_jaxpr(jaxpr, (), args)

    # interpreter hooks
    def const(self, value: Any) -> tuple:
        return tuple(self.solver.fresh(s) for s in np.shape(value))

    def _literal_dims(self, lit: jcore.Literal) -> tuple:
        return self.fresh(lit.aval)

    def _unknown(self, eqn: jcore.JaxprEqn, ins: list) -> list:
        self.unknown[eqn.primitive.name] += 1
        return [self.fresh(v.aval) for v in eqn.outvars]

    def eval_jaxpr(self, jaxpr: jcore.Jaxpr, consts: Sequence[Any], args: Sequence[Any]) -> list:
        depth = len(self._eqns)
        self.events.append(_Enter(jaxpr, depth, self._title, list(consts), list(args)))
        for v, x in [*zip(jaxpr.constvars, consts), *zip(jaxpr.invars, args)]:
            self.visits.setdefault(v, []).append(x)
        outs = super().eval_jaxpr(jaxpr, consts, args)
        self.events.append(_Exit(jaxpr, depth, outs))
        return outs

    def write(self, env, v, x) -> None:
        super().write(env, v, x)
        if not isinstance(v, jcore.DropVar):
            self.visits.setdefault(v, []).append(x)

    def eval_eqn(self, eqn: jcore.JaxprEqn, invals: list) -> Sequence[Any]:
        event = _Eqn(eqn, len(self._eqns), tuple(self._path), list(invals))
        self.events.append(event)
        self._eqns.append(eqn)
        self._path.append(eqn.primitive.name)
        try:
            event.outs = list(super().eval_eqn(eqn, invals))
        finally:
            self._eqns.pop()
            self._path.pop()
        return event.outs


# --- the result ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EqnNames:
    """One visited equation with its operands' and results' names.

    >>> import jax, jax.numpy as jnp
    >>> cj = jax.make_jaxpr(lambda x, w: jnp.tanh(x @ w))(jnp.ones((2, 3)), jnp.ones((3, 4)))
    >>> for e in infer(cj, [("batch", "embed"), ("embed", "mlp")]).equations():
    ...     print(e.primitive, e.in_names, e.out_names)
    dot_general [('batch', 'embed'), ('embed', 'mlp')] [('batch', 'mlp')]
    tanh [('batch', 'mlp')] [('batch', 'mlp')]
    """

    eqn: jcore.JaxprEqn
    path: tuple  # enclosing primitives, outermost first
    in_names: list
    out_names: list

    @property
    def primitive(self) -> str:
        return self.eqn.primitive.name


class NamesResult:
    """The solved names of a jaxpr: look up any var, list equations, print, report coverage.

    >>> import jax, jax.numpy as jnp
    >>> cj = jax.make_jaxpr(lambda x: jnp.sum(jnp.exp(x), axis=1))(jnp.ones((2, 3)))
    >>> r = infer(cj, [("batch", "vocab")])
    >>> r.out_names, r.names_of(cj.jaxpr.eqns[0].outvars[0]), r.dim_coverage(), r.unknown_primitives
    ([('batch',)], ('batch', 'vocab'), (3, 3), {})
    """

    def __init__(self, closed: jcore.ClosedJaxpr, walk: NamesInterpreter, in_dims: list, out_dims: list):
        self.closed_jaxpr = closed
        self._walk = walk
        self._solver = walk.solver
        self.in_names: list[tuple] = [self.names(d) for d in in_dims]
        """Names of the top-level inputs, one tuple per flattened input."""
        self.out_names: list[tuple] = [self.names(d) for d in out_dims]
        """Names of the top-level outputs."""

    def names(self, dims: Sequence[int]) -> tuple:
        return tuple(self._solver.name(n) for n in dims)

    def names_of(self, var: Any) -> tuple:
        """The names of ``var`` (any jaxpr var, at any depth); literals are unnamed.

        A var of a sub-jaxpr walked more than once (one cached jitted function called at two
        places) keeps a name only where every visit agrees.
        """
        if isinstance(var, jcore.Literal):
            return (None,) * len(_shape(var.aval))
        visits = self._walk.visits.get(var)
        if not visits:
            raise KeyError(f"var {var} of type {var.aval} was not reached by the names pass")
        per_visit = [self.names(d) for d in visits]
        return tuple(ns[0] if all(n == ns[0] for n in ns) else None for ns in zip(*per_visit))

    @property
    def unknown_primitives(self) -> dict[str, int]:
        """Primitives the pass has no rule for (their outputs stayed unnamed), with counts."""
        return dict(self._walk.unknown)

    def coverage_report(self) -> str:
        """A line per primitive without a rule, or a note that every primitive was covered."""
        if not self._walk.unknown:
            return "names pass: every primitive had a rule"
        lines = [f"  {name}: {count} eqn(s), outputs left unnamed" for name, count in sorted(self._walk.unknown.items())]
        return "names pass: primitives without a rule\n" + "\n".join(lines)

    def dim_coverage(self, skip_unit: bool = True) -> tuple[int, int]:
        """``(named, total)`` dimensions over every equation's results, at every depth, each
        var once; size-1 dims (broadcasting placeholders) are left out unless ``skip_unit``
        is False. A merged dim counts as named when any of its parts is."""
        named = total = 0
        for v in dict.fromkeys(v for e in self._walk.events if isinstance(e, _Eqn) and e.outs is not None
                               for v in e.eqn.outvars if not isinstance(v, jcore.DropVar)):
            for n, size in zip(self.names_of(v), _shape(v.aval)):
                if size != 1 or not skip_unit:
                    total += 1
                    named += n is not None
        return named, total

    def equations(self, primitive: Optional[str] = None) -> list[EqnNames]:
        """Every visited equation (at every depth, in walk order), optionally of one primitive."""
        return [EqnNames(e.eqn, e.path, [self.names(d) for d in e.ins], [self.names(d) for d in e.outs])
                for e in self._walk.events
                if isinstance(e, _Eqn) and e.outs is not None and (primitive is None or e.eqn.primitive.name == primitive)]

    def type_str(self, aval: Any, dims: Sequence[int]) -> str:
        """``f32[batch:8,embed:256]``; unknown dims print as ``_:8``, merged ones as ``batch*position:32``."""
        short = aval.str_short(short_dtypes=True) if hasattr(aval, "str_short") else str(aval)
        dtype = short.split("[", 1)[0]
        return f"{dtype}[{','.join(f'{_name_str(self._solver.name(n))}:{self._solver.size(n)}' for n in dims)}]"

    def pretty(self) -> str:
        """The jaxpr, as walked, with every var typed by its axis names."""
        return _Printer(self).render(self._walk.events)

    def __str__(self) -> str:
        return self.pretty()


def _name_str(name: AxisName) -> str:
    if name is None:
        return "_"
    if isinstance(name, tuple):
        return "*".join(_name_str(n) for n in name)
    return name


class _Printer:
    def __init__(self, result: NamesResult):
        self.result = result
        self.var_names: dict[Any, str] = {}

    def var(self, v: Any) -> str:
        if isinstance(v, jcore.Literal):
            return f"{v.val}"
        if v not in self.var_names:
            n, s = len(self.var_names), ""
            while True:
                s = chr(ord("a") + n % 26) + s
                n = n // 26 - 1
                if n < 0:
                    break
            self.var_names[v] = s
        return self.var_names[v]

    def typed(self, v: Any, dims: Sequence[int]) -> str:
        if isinstance(v, jcore.DropVar):
            return "_"
        return f"{self.var(v)}:{self.result.type_str(v.aval, dims)}"

    def render(self, events: list) -> str:
        lines = []
        for e in events:
            pad = "  " * (2 * e.depth)
            if isinstance(e, _Enter):
                consts = " ".join(self.typed(v, d) for v, d in zip(e.jaxpr.constvars, e.consts))
                args = " ".join(self.typed(v, d) for v, d in zip(e.jaxpr.invars, e.args))
                title = f"{e.title}: " if e.depth else ""
                lines.append(f"{pad}{title}{{ lambda {consts}; {args}. let")
            elif isinstance(e, _Eqn):
                outs = " ".join(self.typed(v, d) for v, d in zip(e.eqn.outvars, e.outs or ()))
                params = _short_params(e.eqn.params)
                ins = " ".join(self.var(v) for v in e.eqn.invars)
                lines.append(f"{pad}    {outs} = {e.eqn.primitive.name}{params} {ins}".rstrip())
            else:
                lines.append(f"{pad}  in ({', '.join(self.var(v) for v in e.jaxpr.outvars)}) }}")
        return "\n".join(lines)


def _short_params(params: Mapping[str, Any]) -> str:
    shown = []
    for k, v in params.items():
        if v is None or isinstance(v, (jcore.Jaxpr, jcore.ClosedJaxpr)) or callable(v):
            continue
        if isinstance(v, tuple) and any(isinstance(b, (jcore.Jaxpr, jcore.ClosedJaxpr)) for b in v):
            continue
        text = f"{k}={v}"
        if len(text) <= 60:
            shown.append(text)
    return f"[{' '.join(shown)}]" if shown else ""


# --- entry point ---------------------------------------------------------------------


def infer(closed_jaxpr: jcore.ClosedJaxpr, in_names: Optional[Sequence[Optional[Sequence[Any]]]] = None,
          *, check_sizes: bool = False) -> NamesResult:
    """Solve the axis names of every var of ``closed_jaxpr``.

    ``in_names`` has one entry per flattened input: None (unnamed) or a sequence of one
    name (a string, an :class:`~namax.Axis` or None) per dimension. ``check_sizes=True``
    also rejects one name used at two sizes anywhere in the program.

    >>> import jax, jax.numpy as jnp
    >>> cj = jax.make_jaxpr(lambda x, w: jnp.tanh(x @ w))(jnp.ones((2, 3)), jnp.ones((3, 4)))
    >>> infer(cj, [("batch", "embed"), ("embed", "mlp")]).out_names
    [('batch', 'mlp')]
    """
    invars = closed_jaxpr.jaxpr.invars
    if in_names is None:
        in_names = [None] * len(invars)
    in_names = list(in_names)
    if len(in_names) != len(invars):
        raise ValueError(f"infer: got names for {len(in_names)} inputs but the jaxpr has {len(invars)} inputs")
    walk = NamesInterpreter(check_sizes=check_sizes)
    in_dims = [walk.fresh(v.aval) for v in invars]
    for i, (v, dims, names) in enumerate(zip(invars, in_dims, in_names)):
        if names is None:
            continue
        names = tuple(names)
        if len(names) != len(dims):
            raise ValueError(
                f"infer: input {i} has shape {_shape(v.aval)} but {len(names)} names were given: {names}"
            )
        for d, (node, name) in enumerate(zip(dims, names)):
            if getattr(name, "size", walk.size(node)) != walk.size(node):
                raise ValueError(f"infer: input {i} dimension {d} has size {walk.size(node)} but was named {name}")
            name = getattr(name, "name", name)
            if name is not None:
                walk.solver.label(node, name, f"input {i}, dimension {d}")
    out_dims = walk.run(closed_jaxpr, *in_dims)
    walk.solver.close()
    walk.solver.spread_links(walk.links)
    return NamesResult(closed_jaxpr, walk, in_dims, out_dims)


__all__ = ["AxisName", "AxisNameConflictError", "DimSolver", "EqnNames", "NamesInterpreter", "NamesResult", "infer"]
