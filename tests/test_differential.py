"""Differential test: random named programs, run five ways, must agree.

A small program generator (hypothesis) draws 2-3 axes with small sizes (2, 4 or 8), 1-3
input NamedArrays over random subsets/orders of those axes, then 3-6 ops from ``OPS``,
each applied to values produced earlier. Every program is run

* eagerly through namax,
* under ``jax.jit``,
* under ``nx.namedjit`` (no mesh),
* under ``nx.namedjit`` sharded over a 4x2 ("data", "model") mesh with a random axis
  mapping whose sizes divide (Explicit or Auto mesh axes),
* by ``reference``: a NumPy (float64) interpreter of the same op list that does its own
  names -> positions alignment (no namax in it),

and all results must have the same axis names (in the same order) and values equal up
to a float32 error bound computed alongside the program (``Meta.err``). The sharded
outputs must also be placed as their names map (``pspec_for``); a mapped output axis whose
size does not divide (after a slice or rename) must raise ``ShardingError`` (outputs are
placed strictly, like inputs), and is then dropped from the mapping.

The test found two namax bugs, both fixed and now covered here: mesh= with an Explicit mesh
and a mapping that placed no input and no output failed ("Length of device assignment 1 is
not equal to the size of the mesh 8"); and on an Auto mesh an output whose names map to no
mesh axis kept whatever sharding XLA propagated instead of being replicated.

A program is printed as one line per value (``v3 = dot(v0, v2, axis=('b',))  # {'a': 4, 'c': 2}``),
so a shrunk failure reads as a program.

50 examples by default (about 10-15 s here); more: ``NAMAX_DIFF_EXAMPLES=200 pytest
tests/test_differential.py`` (add ``--hypothesis-seed=N`` for a fresh search).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax.sharding import AxisType, NamedSharding

import namax as nx
from namax.partitioning import pspec_for

NAMES = ("a", "b", "c")
SIZES = (2, 4, 8)
MESH_SHAPE = {"data": 4, "model": 2}
MAX_BOUND = 1e4  # ops whose result could exceed this magnitude are not drawn (no float32 overflow)
EPS = 2.0 ** -23  # float32 unit roundoff (generous: XLA's exp/tanh approximations are a few ulp)

# --- the op table --------------------------------------------------------------------------
UNARY = ("exp", "tanh", "sin", "abs", "square")
BINARY = ("add", "sub", "mul", "maximum")
REDUCE = ("sum", "mean", "max")
OTHER = ("dot", "rearrange", "softmax", "take", "slice", "rename", "scale")
RENAMES = NAMES + ("d", "e")  # rename targets: the other axes' names (maybe of another size) or new ones
OPS = UNARY + BINARY + REDUCE + OTHER
"""Op tuples (the program's instructions; ``i``, ``j`` index earlier values):

* ``(u, i)`` for u in UNARY: ``nx.<u>(v_i)``
* ``(b, i, j)`` for b in BINARY: ``v_i + v_j`` / ``-`` / ``*`` / ``nx.maximum``, broadcasting by name
* ``(r, i, axes)`` for r in REDUCE: ``nx.<r>(v_i, axes)``; ``axes`` a name, a tuple of names or None (all)
* ``("dot", i, j, axes)``: ``nx.dot(v_i, v_j, axis=axes)``, axes shared by both
* ``("rearrange", i, spec)``: ``v_i.rearrange(spec)``, spec a permutation, maybe with ``...``
* ``("softmax", i, name)``: ``nx.nn.softmax(v_i, name)``
* ``("take", i, name, k)``: ``v_i[name, k]`` (drops the axis)
* ``("slice", i, name, lo, hi)``: ``v_i[name, lo:hi]`` (the axis keeps its name, with size hi - lo)
* ``("rename", i, old, new)``: ``v_i.rename({old: new})``
* ``("scale", i, c)``: ``v_i * c`` (a Python float)

Binary ops and dot are drawn only between values whose shared names have equal sizes; an op
whose result could exceed ``MAX_BOUND`` in magnitude is not drawn.
"""

EXAMPLES = int(os.environ.get("NAMAX_DIFF_EXAMPLES", "50"))


CALL_TEXT = {  # how a program line reads, per kind of op (its value numbers, then its static arguments)
    "unary": lambda kind, *vs: f"{kind}({', '.join(f'v{i}' for i in vs)})",
    "reduce": lambda kind, v, axis: f"{kind}(v{v}, {axis!r})",
    "dot": lambda kind, a, b, axis: f"dot(v{a}, v{b}, axis={axis!r})",
    "rearrange": lambda kind, v, spec: f"v{v}.rearrange({spec!r})",
    "softmax": lambda kind, v, axis: f"softmax(v{v}, {axis!r})",
    "take": lambda kind, v, axis, i: f"v{v}[{axis!r}, {i}]",
    "slice": lambda kind, v, axis, lo, hi: f"v{v}[{axis!r}, {lo}:{hi}]",
    "rename": lambda kind, v, old, new: f"v{v}.rename({{{old!r}: {new!r}}})",
    "scale": lambda kind, v, c: f"v{v} * {c!r}",
}


@dataclasses.dataclass(frozen=True)
class Meta:
    """What the generator knows of a value: its axis names, a bound on |value| and on its
    float32 absolute error against exact arithmetic."""

    names: tuple
    sizes: tuple
    bound: float
    err: float

    @property
    def size(self) -> dict:
        return dict(zip(self.names, self.sizes))


def _fits(m1: Meta, m2: Meta) -> bool:
    """Shared names have equal sizes (else namax rightly refuses to broadcast them)."""
    return all(m1.size[a] == m2.size[a] for a in m1.names if a in m2.names)


@dataclasses.dataclass(frozen=True, repr=False)
class Program:
    sizes: dict  # name -> size, for the inputs
    inputs: tuple  # per input, its axis names
    ops: tuple  # op tuples, value numbers continue after the inputs
    outputs: tuple  # value numbers returned
    metas: tuple  # per value

    def _repr_pretty_(self, p, cycle) -> None:  # hypothesis prints the program, not the dataclass
        p.text(repr(self))

    def line(self, k: int) -> str:
        n = len(self.inputs)
        if k < n:
            return f"v{k} = input{k}  # {self.metas[k].size}"
        kind, *args = self.ops[k - n]
        form = "unary" if kind in UNARY + BINARY else "reduce" if kind in REDUCE else kind
        call = CALL_TEXT.get(form, CALL_TEXT["scale"])(kind, *args)
        return f"v{k} = {call}  # {self.metas[k].size}"

    def __repr__(self) -> str:
        lines = [f"sizes {self.sizes}"] + [self.line(k) for k in range(len(self.metas))]
        lines.append(f"return {', '.join(f'v{i}' for i in self.outputs)}")
        return "\n    " + "\n    ".join(lines)


def _union(*name_tuples: tuple) -> tuple:
    out: list = []
    for names in name_tuples:
        out += [n for n in names if n not in out]
    return tuple(out)


def _meta_for(op: tuple, metas: list) -> Meta:
    """The result's names, sizes and bounds (value; float32 error by forward analysis)."""
    kind = op[0]
    m = metas[op[1]]
    b, e = m.bound, m.err

    def same(bound: float, err: float) -> Meta:
        return Meta(m.names, m.sizes, bound, err)

    def of(size: dict, names: tuple, bound: float, err: float) -> Meta:
        return Meta(tuple(names), tuple(size[a] for a in names), bound, err)

    if kind == "exp":
        out = math.exp(min(b, 100.0))  # (past MAX_BOUND anyway: not drawn)
        return same(out, out * (e + 2 * EPS))
    if kind in ("tanh", "sin"):
        return same(1.0 if kind == "tanh" else min(b, 1.0), e + 2 * EPS)
    if kind == "abs":
        return same(b, e)
    if kind == "square":
        return same(b * b, 2 * b * e + e * e + EPS * b * b)
    if kind == "scale":
        c = abs(op[2])
        return same(b * c, e * c + EPS * b * c)
    if kind in BINARY:
        m2 = metas[op[2]]
        size = {**m.size, **m2.size}
        names = _union(m.names, m2.names)
        if kind in ("add", "sub"):
            return of(size, names, b + m2.bound, e + m2.err + EPS * (b + m2.bound))
        if kind == "mul":
            return of(size, names, b * m2.bound, b * m2.err + m2.bound * e + e * m2.err + EPS * b * m2.bound)
        return of(size, names, max(b, m2.bound), max(e, m2.err))
    if kind in REDUCE:
        axes = m.names if op[2] is None else (op[2],) if isinstance(op[2], str) else op[2]
        n = math.prod(m.size[a] for a in axes)
        names = tuple(a for a in m.names if a not in axes)
        if kind == "sum":
            return of(m.size, names, b * n, n * e + n * EPS * b)
        if kind == "mean":
            return of(m.size, names, b, e + n * EPS * b)
        return of(m.size, names, b, e)
    if kind == "dot":
        m2 = metas[op[2]]
        n = math.prod(m.size[a] for a in op[3])
        names = tuple(a for a in _union(m.names, m2.names) if a not in op[3])
        prod_err = b * m2.err + m2.bound * e + e * m2.err
        return of({**m.size, **m2.size}, names, n * b * m2.bound, n * prod_err + n * EPS * b * m2.bound)
    if kind == "rearrange":
        return of(m.size, _rearranged(m.names, op[2]), b, e)
    if kind == "softmax":
        return same(1.0, 2 * e + 16 * EPS)
    if kind == "take":
        return of(m.size, tuple(a for a in m.names if a != op[2]), b, e)
    if kind == "slice":
        return of({**m.size, op[2]: op[4] - op[3]}, m.names, b, e)
    if kind == "rename":
        return of({**m.size, op[3]: m.size[op[2]]}, tuple(op[3] if a == op[2] else a for a in m.names), b, e)
    raise AssertionError(op)


def _rearranged(names: tuple, spec: tuple) -> tuple:
    if Ellipsis not in spec:
        return tuple(spec)
    k = spec.index(Ellipsis)
    rest = tuple(a for a in names if a not in spec)
    return tuple(spec[:k]) + rest + tuple(spec[k + 1:])


@st.composite
def programs(draw) -> Program:
    n_axes = draw(st.integers(2, 3), label="n_axes")
    names = NAMES[:n_axes]
    sizes = {a: draw(st.sampled_from(SIZES), label=f"size {a}") for a in names}
    metas: list[Meta] = []
    inputs = []
    for _ in range(draw(st.integers(1, 3), label="n_inputs")):
        k = draw(st.integers(1, n_axes))
        axes = tuple(draw(st.permutations(names))[:k])
        inputs.append(axes)
        metas.append(Meta(axes, tuple(sizes[a] for a in axes), 1.0, 0.0))
    ops: list[tuple] = []
    target = draw(st.integers(3, 6), label="n_ops")
    tries = 0
    while len(ops) < target and tries < 8 * target:
        tries += 1
        n = len(metas)
        pick = st.integers(0, n - 1).map(lambda k, n=n: n - 1 - k)  # shrinks to the latest value: chains
        kind = draw(st.sampled_from(OPS))
        i = draw(pick)
        m = metas[i]
        if kind in UNARY:
            op = (kind, i)
        elif kind in BINARY:
            j = draw(pick)
            if not _fits(m, metas[j]):
                continue
            op = (kind, i, j)
        elif kind == "scale":
            op = (kind, i, draw(st.sampled_from((0.5, -2.0, 3.0))))
        elif not m.names:
            continue  # the rest need an axis
        elif kind in REDUCE:
            sel = draw(st.sampled_from(("one", "two", "all")))
            if sel == "one" or len(m.names) < 2:
                axes: Any = draw(st.sampled_from(m.names))
            elif sel == "two":
                axes = tuple(draw(st.permutations(m.names))[:2])
            else:
                axes = None
            op = (kind, i, axes)
        elif kind == "dot":
            partners = [j for j in range(n) if set(metas[j].names) & set(m.names) and _fits(m, metas[j])]
            j = draw(st.sampled_from(partners))  # i itself is always a partner
            shared = [a for a in m.names if a in metas[j].names]
            k = draw(st.integers(1, len(shared)))
            op = (kind, i, j, tuple(draw(st.permutations(shared))[:k]))
        elif kind == "rearrange":
            perm = tuple(draw(st.permutations(m.names)))
            if len(perm) >= 2 and draw(st.booleans()):  # an ellipsis standing for the rest
                keep = draw(st.integers(1, len(perm) - 1))
                at = draw(st.integers(0, keep))
                perm = perm[:keep][:at] + (Ellipsis,) + perm[:keep][at:]
            op = (kind, i, perm)
        elif kind == "softmax":
            op = (kind, i, draw(st.sampled_from(m.names)))
        elif kind == "take":
            a = draw(st.sampled_from(m.names))
            op = (kind, i, a, draw(st.integers(0, m.size[a] - 1)))
        elif kind == "slice":
            a = draw(st.sampled_from(m.names))
            lo = draw(st.integers(0, m.size[a] - 1))
            op = (kind, i, a, lo, draw(st.integers(lo + 1, m.size[a])))
        else:  # rename
            a = draw(st.sampled_from(m.names))
            op = (kind, i, a, draw(st.sampled_from([r for r in RENAMES if r not in m.names])))
        meta = _meta_for(op, metas)
        if meta.bound > MAX_BOUND:
            continue
        ops.append(op)
        metas.append(meta)
    outputs = (len(metas) - 1,)
    if draw(st.booleans(), label="second output"):
        outputs += (draw(st.integers(0, len(metas) - 2)),)
    return Program(sizes, tuple(inputs), tuple(ops), outputs, tuple(metas))


# --- running a program with namax ----------------------------------------------------------
def run_namax(prog: Program, *xs: nx.NamedArray) -> tuple:
    vals = list(xs)
    for op in prog.ops:
        kind, x = op[0], vals[op[1]]
        if kind in UNARY:
            y = getattr(nx, kind)(x)
        elif kind == "add":
            y = x + vals[op[2]]
        elif kind == "sub":
            y = x - vals[op[2]]
        elif kind == "mul":
            y = x * vals[op[2]]
        elif kind == "maximum":
            y = nx.maximum(x, vals[op[2]])
        elif kind in REDUCE:
            y = getattr(nx, kind)(x, op[2])
        elif kind == "dot":
            y = nx.dot(x, vals[op[2]], axis=op[3])
        elif kind == "rearrange":
            y = x.rearrange(op[2])
        elif kind == "softmax":
            y = nx.nn.softmax(x, op[2])
        elif kind == "take":
            y = x[op[2], op[3]]
        elif kind == "slice":
            y = x[op[2], op[3]:op[4]]
        elif kind == "rename":
            y = x.rename({op[2]: op[3]})
        else:
            y = x * op[2]
        vals.append(y)
    return tuple(vals[k] for k in prog.outputs)


# --- the NumPy reference (names -> positions done here, no namax) ---------------------------
def _align(arr: np.ndarray, names: tuple, to: tuple) -> np.ndarray:
    """``arr`` (dims ``names``) transposed and expanded to broadcast against dims ``to``."""
    present = [a for a in to if a in names]
    arr = np.transpose(arr, [names.index(a) for a in present])
    return arr.reshape([arr.shape[present.index(a)] if a in names else 1 for a in to])


def reference(prog: Program, arrays: list) -> list:
    vals = [(np.asarray(a, np.float64), names) for a, names in zip(arrays, prog.inputs)]
    for op in prog.ops:
        kind, (x, xn) = op[0], vals[op[1]]
        if kind in UNARY:
            f = {"exp": np.exp, "tanh": np.tanh, "sin": np.sin, "abs": np.abs, "square": np.square}[kind]
            out = (f(x), xn)
        elif kind in BINARY:
            y, yn = vals[op[2]]
            names = _union(xn, yn)
            f = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "maximum": np.maximum}[kind]
            out = (f(_align(x, xn, names), _align(y, yn, names)), names)
        elif kind in REDUCE:
            axes = xn if op[2] is None else (op[2],) if isinstance(op[2], str) else op[2]
            f = {"sum": np.sum, "mean": np.mean, "max": np.max}[kind]
            out = (f(x, axis=tuple(xn.index(a) for a in axes)), tuple(a for a in xn if a not in axes))
        elif kind == "dot":
            y, yn = vals[op[2]]
            names = _union(xn, yn)
            prod = _align(x, xn, names) * _align(y, yn, names)
            out = (np.sum(prod, axis=tuple(names.index(a) for a in op[3])),
                   tuple(a for a in names if a not in op[3]))
        elif kind == "rearrange":
            names = _rearranged(xn, op[2])
            out = (np.transpose(x, [xn.index(a) for a in names]), names)
        elif kind == "softmax":
            k = xn.index(op[2])
            e = np.exp(x - np.max(x, axis=k, keepdims=True))
            out = (e / np.sum(e, axis=k, keepdims=True), xn)
        elif kind == "take":
            out = (np.take(x, op[3], axis=xn.index(op[2])), tuple(a for a in xn if a != op[2]))
        elif kind == "slice":
            out = (np.take(x, np.arange(op[3], op[4]), axis=xn.index(op[2])), xn)
        elif kind == "rename":
            out = (x, tuple(op[3] if a == op[2] else a for a in xn))
        else:
            out = (x * op[2], xn)
        vals.append(out)
    return [vals[k] for k in prog.outputs]


# --- meshes and mappings ---------------------------------------------------------------------
_MESHES: dict = {}


def _mesh(kind: str):
    if kind not in _MESHES:
        axis_type = getattr(AxisType, kind)
        _MESHES[kind] = jax.make_mesh((4, 2), ("data", "model"), axis_types=(axis_type,) * 2)
    return _MESHES[kind]


@st.composite
def mappings(draw, sizes: dict) -> dict:
    """Axis name -> "data" / "model" / ("data", "model"), each mesh axis used once, input sizes
    dividing (a name on no input, such as a rename target, is placed non-strictly where it
    appears, so any target goes)."""
    free = set(MESH_SHAPE)
    mapping = {}
    sizes = {**{r: 8 for r in RENAMES}, **sizes}
    for name in draw(st.permutations(sorted(sizes))):
        options: list = [None]
        for target in ("data", "model", ("data", "model")):
            axes = (target,) if isinstance(target, str) else target
            if set(axes) <= free and sizes[name] % math.prod(MESH_SHAPE[a] for a in axes) == 0:
                options.append(target)
        target = draw(st.sampled_from(options))
        if target is not None:
            mapping[name] = target
            free -= {target} if isinstance(target, str) else set(target)
    return mapping


# --- the test ------------------------------------------------------------------------------------
def _check(what: str, got: Any, ref: tuple, meta: Meta, prog: Program, scale: float = 1.0) -> None:
    arr, names = ref
    assert isinstance(got, nx.NamedArray), f"{what}: got a {type(got).__name__}\nprogram:{prog!r}"
    assert got.axis_names == names, f"{what}: axes {got.axis_names}, expected {names}\nprogram:{prog!r}"
    assert tuple(got.array.shape) == arr.shape, (
        f"{what}: shape {got.array.shape}, expected {arr.shape}\nprogram:{prog!r}")
    atol = scale * (8 * meta.err + 1e-6)
    np.testing.assert_allclose(np.asarray(got.array, np.float64), arr, rtol=1e-5, atol=atol,
                               err_msg=f"{what} (atol {atol:.3g})\nprogram:{prog!r}")


def _inputs(prog: Program, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, size=[prog.sizes[a] for a in names]).astype(np.float32) for names in prog.inputs]


def xs_for(prog: Program, seed: int) -> list:
    return [nx.named(a, names) for a, names in zip(_inputs(prog, seed), prog.inputs)]


def _run_sharded(prog: Program, mapping: dict, mesh, via: str, xs: list) -> tuple:
    def fn(*xs):
        return run_namax(prog, *xs)

    if via == "mesh=":
        return nx.namedjit(fn, axis_resources=mapping, mesh=mesh)(*xs)
    with jax.set_mesh(mesh):
        return nx.namedjit(fn, axis_resources=mapping)(*xs)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prog=programs(), seed=st.integers(0, 2 ** 16), mesh_kind=st.sampled_from(["Explicit", "Auto"]),
       via=st.sampled_from(["mesh=", "set_mesh"]), data=st.data())
def test_random_programs_agree(prog: Program, seed: int, mesh_kind: str, via: str, data: st.DataObject) -> None:
    mapping = data.draw(mappings(prog.sizes), label="axis_resources")
    mesh = _mesh(mesh_kind)
    # Outputs are placed strictly, as inputs are (namax/passes/pipeline.py: "inputs and outputs
    # are placed by the user: strict"): a mapped output axis whose size does not divide (after
    # a slice or a rename) is a ShardingError. Such names are checked to raise, then dropped.
    bad = [(m.names, m.sizes, a) for m in (prog.metas[k] for k in prog.outputs) for a, size in m.size.items()
           if a in mapping and size % math.prod(MESH_SHAPE[t] for t in np.atleast_1d(mapping[a])) != 0]
    if bad:
        with pytest.raises(nx.ShardingError, match="does not divide"):
            _run_sharded(prog, mapping, mesh, via, xs_for(prog, seed))
        mapping = {a: t for a, t in mapping.items() if a not in {b[2] for b in bad}}
    arrays = _inputs(prog, seed)
    xs = [nx.named(a, names) for a, names in zip(arrays, prog.inputs)]
    expected = reference(prog, arrays)
    out_metas = [prog.metas[k] for k in prog.outputs]

    def fn(*xs):
        return run_namax(prog, *xs)

    runs = {
        "eager": fn(*xs),
        "jax.jit": jax.jit(fn)(*xs),
        "namedjit": nx.namedjit(fn)(*xs),
    }
    sharded = _run_sharded(prog, mapping, mesh, via, xs)
    runs[f"namedjit sharded {mapping} on {mesh_kind} mesh via {via}"] = sharded
    for what, outs in runs.items():
        assert len(outs) == len(expected), f"{what}: {len(outs)} outputs\nprogram:{prog!r}"
        for got, ref, meta in zip(outs, expected, out_metas):
            _check(what, got, ref, meta, prog)
    for got, plain, ref, meta in zip(sharded, runs["namedjit"], expected, out_metas):
        # sharded against unsharded: both within the bound of the exact value
        np.testing.assert_allclose(np.asarray(got.array), np.asarray(plain.array), rtol=2e-5,
                                   atol=2 * (8 * meta.err + 1e-6),
                                   err_msg=f"sharded {mapping} vs unsharded\nprogram:{prog!r}")
        spec = pspec_for(got.axis_names, got.array.shape, mapping, mesh, strict=False, what="output")
        placed = got.array.sharding.is_equivalent_to(NamedSharding(mesh, spec), got.array.ndim)
        assert placed, (
            f"output {got.axis_names} placed {got.array.sharding.spec}, names map to {spec} "
            f"under {mapping} ({mesh_kind} mesh)\nprogram:{prog!r}")


def test_reference_alignment():
    """The reference's own names -> positions alignment, on a hand-worked case."""
    prog = Program({"a": 2, "b": 3}, (("a", "b"), ("b",)), (("add", 0, 1), ("dot", 2, 0, ("a",))), (3,),
                   (Meta(("a", "b"), (2, 3), 1, 0), Meta(("b",), (3,), 1, 0), Meta(("a", "b"), (2, 3), 2, 0),
                    Meta(("b",), (3,), 4, 0)))
    x = np.arange(6.0).reshape(2, 3)
    y = np.array([10.0, 20.0, 30.0])
    ((out, names),) = reference(prog, [x, y])
    assert names == ("b",)
    np.testing.assert_allclose(out, ((x + y) * x).sum(0))
    assert _rearranged(("a", "b", "c"), ("c", ...)) == ("c", "a", "b")
    assert _rearranged(("a", "b", "c"), (..., "a")) == ("b", "c", "a")
