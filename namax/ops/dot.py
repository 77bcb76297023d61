"""Contractions by name: ``dot`` (Haliax semantics) and ``einsum`` with Haliax's axis strings."""

from __future__ import annotations

import string
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from ..axis import Axis, AxisSelection, axis_name, axis_names, ensure_tuple, is_axis_selection, merge_axes
from ..layout import dot_operands
from ..named import NamedArray, _axes_str, wrap
from .axis_string import AxisName, EinsumSpec, Rest, fail, parse_einsum


def dot(*arrays: Any, axis: Optional[AxisSelection] = None, precision=None,
        preferred_element_type=None) -> NamedArray:
    """Multiply NamedArrays, summing over the named ``axis`` (one or several).

    Axes shared by several operands and not contracted are matched elementwise (batch
    axes); the result has every other axis, in order of first appearance. ``axis=()``
    contracts nothing (an outer/elementwise product); ``axis=None`` contracts every axis.
    The older form ``dot(axis, a, b)`` is accepted too. Two operands become one
    ``dot_general`` in the form the backend runs fastest (operand order and dimension
    numbers from :mod:`namax.layout`); the result's axis order does not depend on it.

    >>> import namax as nx
    >>> B, E, M = nx.Axis("b", 2), nx.Axis("e", 3), nx.Axis("m", 4)
    >>> nx.dot(nx.ones((B, E)), nx.ones((E, M)), axis=E).axes
    (Axis('b', 2), Axis('m', 4))
    """
    if arrays and (is_axis_selection(arrays[0]) or (isinstance(arrays[0], tuple) and arrays[0] == ())):
        if axis is not None:
            raise TypeError("dot: axis given both positionally (first argument) and as axis=")
        axis, arrays = arrays[0], arrays[1:]
    if not arrays:
        raise TypeError("dot needs at least one NamedArray")
    for i, a in enumerate(arrays):
        if not isinstance(a, NamedArray):
            raise TypeError(f"dot: operand {i} is a {type(a).__name__}, not a NamedArray; name its axes first")
    all_axes = merge_axes(*(a.axes for a in arrays), what="operands of dot")
    if axis is None:
        contracted = tuple(a.name for a in all_axes)
    else:
        contracted = axis_names(axis)
        if len(set(contracted)) != len(contracted):
            raise ValueError(f"dot: an axis is contracted twice in axis={contracted}")
        for i, c in enumerate(ensure_tuple(axis)):
            holders = [j for j, a in enumerate(arrays) if a.has_axis(c)]
            if not holders:
                raise ValueError(
                    f"dot: contracted axis {contracted[i]!r} is in none of the operands "
                    f"{', '.join(_axes_str(a.axes) for a in arrays)}"
                )
            if len(holders) == 1 and len(arrays) > 1:
                raise ValueError(
                    f"dot: contracted axis {contracted[i]!r} is only in operand {holders[0]} "
                    f"{_axes_str(arrays[holders[0]].axes)}, not in "
                    f"{', '.join(_axes_str(a.axes) for j, a in enumerate(arrays) if j != holders[0])}; "
                    f"use namax.sum to sum over an axis of one array"
                )
            if isinstance(c, Axis):
                arrays[holders[0]].axis_index(c)  # checks the size
    out_axes = tuple(a for a in all_axes if a.name not in contracted)
    if len(arrays) == 2:
        out = _dot2(arrays[0], arrays[1], contracted, out_axes, precision, preferred_element_type)
    else:
        out = _einsum_raw(arrays, out_axes, precision, preferred_element_type)
    return wrap(out, out_axes)


def _dot2(a: NamedArray, b: NamedArray, contracted: Sequence[str], out_axes: Sequence[Axis],
          precision, preferred_element_type, dot_general: Optional[Callable] = None,
          out_sharding=None) -> jax.Array:
    """One ``dot_general`` for two operands, then (if needed) a transpose to ``out_axes``.

    The operand order and dimension numbers come from ``namax.layout.dot_operands`` (the
    backend's fast form: a big operand first against a skinny one, else lhs contracting dims
    last, result in ``out_axes`` order if possible). ``dot_general`` may be a replacement with
    ``jax.lax.dot_general``'s signature; ``out_sharding`` is for the result in ``out_axes`` order.
    """
    an, bn = a.axis_names, b.axis_names
    only_a = [n for n in contracted if n in an and n not in bn]
    only_b = [n for n in contracted if n in bn and n not in an]
    if only_a or only_b:  # axis=None over disjoint axes: sum them out first
        ra = jnp.sum(a.array, axis=tuple(an.index(n) for n in only_a)) if only_a else a.array
        rb = jnp.sum(b.array, axis=tuple(bn.index(n) for n in only_b)) if only_b else b.array
        a = NamedArray(ra, [x for x in a.axes if x.name not in only_a])
        b = NamedArray(rb, [x for x in b.axes if x.name not in only_b])
        an, bn = a.axis_names, b.axis_names
    want = [x.name for x in out_axes]
    sizes = {x.name: x.size for x in (*a.axes, *b.axes)}
    plan = dot_operands(an, bn, contracted, want, sizes=sizes)
    lhs, rhs = (b, a) if plan.swap else (a, b)
    if plan.swap and isinstance(precision, tuple):
        precision = precision[::-1]
    produced = list(plan.produced)
    dot_general = jax.lax.dot_general if dot_general is None else dot_general
    extra = {} if out_sharding is None else {"out_sharding": _sharding_in_order(out_sharding, want, produced)}
    out = dot_general(lhs.array, rhs.array, plan.dimension_numbers, precision=precision,
                      preferred_element_type=preferred_element_type, **extra)
    if produced != want:
        if plan.barrier:  # keep XLA from folding the transpose back into the slow operand order
            out = jax.lax.optimization_barrier(out)
        out = jnp.transpose(out, [produced.index(n) for n in want])
    return out


def _einsum_raw(arrays: Sequence[NamedArray], out_axes: Sequence[Axis], precision,
                preferred_element_type, out_sharding=None) -> jax.Array:
    letters: dict[str, str] = {}
    pool = iter(string.ascii_letters)

    def letter(name: str) -> str:
        if name not in letters:
            try:
                letters[name] = next(pool)
            except StopIteration:
                raise ValueError("dot/einsum: more than 52 distinct axes") from None
        return letters[name]

    ins = ",".join("".join(letter(n) for n in a.axis_names) for a in arrays)
    out = "".join(letter(x.name) for x in out_axes)
    extra = {} if out_sharding is None else {"out_sharding": out_sharding}
    result = jnp.einsum(f"{ins}->{out}", *(a.array for a in arrays), precision=precision,
                        preferred_element_type=preferred_element_type, **extra)
    if out_sharding is not None and len(arrays) == 1:  # no dot_general to take it
        result = jax.sharding.reshard(result, out_sharding)
    return result


def _sharding_in_order(sharding, want: Sequence[str], produced: Sequence[str]):
    """``out_sharding`` given for axes in ``want`` order, restated for the ``produced`` order."""
    if list(want) == list(produced):
        return sharding
    spec = sharding.spec if isinstance(sharding, NamedSharding) else sharding
    if not isinstance(spec, PartitionSpec):
        raise TypeError(f"einsum: out_sharding must be a PartitionSpec or a NamedSharding, got {sharding!r}")
    if len(spec) > len(want):
        raise ValueError(f"einsum: out_sharding {spec} has {len(spec)} entries for a result of "
                         f"{len(want)} axes {tuple(want)}")
    entries = tuple(spec) + (None,) * (len(want) - len(spec))
    moved = PartitionSpec(*(entries[list(want).index(n)] for n in produced))
    return NamedSharding(sharding.mesh, moved) if isinstance(sharding, NamedSharding) else moved


def _einsum_chain(arrays: Sequence[NamedArray], out_axes: Sequence[Axis], precision, preferred_element_type,
                  dot_general: Callable, out_sharding) -> jax.Array:
    """Contract left to right with ``_dot2`` (so a replacement ``dot_general`` does every product)."""
    acc = arrays[0]
    for k in range(1, len(arrays)):
        if k == len(arrays) - 1:
            keep = tuple(out_axes)
        else:
            needed = {x.name for x in out_axes} | {n for a in arrays[k + 1:] for n in a.axis_names}
            keep = tuple(x for x in merge_axes(acc.axes, arrays[k].axes) if x.name in needed)
        contracted = [x.name for x in merge_axes(acc.axes, arrays[k].axes) if x not in keep]
        raw = _dot2(acc, arrays[k], contracted, keep, precision, preferred_element_type, dot_general,
                    out_sharding if k == len(arrays) - 1 else None)
        acc = NamedArray(raw, keep)
    return acc.array


class _Aliases:
    """``axis_aliases`` of einsum: a name in the equation standing for an axis (or its name)."""

    def __init__(self, aliases: dict, equation: str):
        for key, value in aliases.items():
            if not isinstance(value, (Axis, str)):
                raise TypeError(
                    f"einsum: axis alias {key}={value!r} must be an Axis or an axis name (keyword "
                    f"arguments other than precision, preferred_element_type, _dot_general and "
                    f"out_sharding are axis aliases)"
                )
        self.table, self.equation, self.used = dict(aliases), equation, set()

    def target(self, name: str) -> str:
        """The axis name ``name`` stands for (itself unless it is an alias)."""
        if name in self.table:
            self.used.add(name)
            return axis_name(self.table[name])
        return name

    def check(self, item: AxisName, axis: Axis) -> None:
        """An Axis alias must agree in size with the operands' axis."""
        alias = self.table.get(item.name)
        if isinstance(alias, Axis) and alias.size != axis.size:
            fail("einsum", self.equation, item.span,
                 f"alias {item.name}={alias} has size {alias.size} but the operands' axis "
                 f"{axis.name!r} has size {axis.size}")

    def check_all_used(self) -> None:
        unused = [k for k in self.table if k not in self.used]
        if unused:
            raise ValueError(
                f"einsum: axis alias{'es' if len(unused) > 1 else ''} {', '.join(unused)} "
                f"not used in the equation {self.equation!r} (keyword arguments other than precision, "
                f"preferred_element_type, _dot_general and out_sharding are axis aliases)"
            )


def _axis_by_name(item: AxisName, by_name: dict, aliases: _Aliases, where: str) -> Axis:
    """The operands' axis ``item`` names (through an alias if it is one)."""
    target = aliases.target(item.name)
    axis = by_name.get(target)
    if axis is None:
        via = f" (alias {item.name}={target!r})" if target != item.name else ""
        fail("einsum", aliases.equation, item.span,
             f"{where} axis {target!r}{via} is in no operand; their axes are {_axes_str(tuple(by_name.values()))}")
    aliases.check(item, axis)
    return axis


def _unique(axes: Sequence[tuple[AxisName, Axis]], equation: str, what: str) -> None:
    seen: set[str] = set()
    for item, axis in axes:
        if axis.name in seen:
            fail("einsum", equation, item.span, f"{what} names an axis twice ({axis.name!r})")
        seen.add(axis.name)


def _output_only(spec: EinsumSpec, by_name: dict, aliases: _Aliases) -> tuple[Axis, ...]:
    """``-> h w``: the output lists the kept axes (``...`` for the rest); all others are summed."""
    named = [(i, _axis_by_name(i, by_name, aliases, "output")) for i in spec.output.items if isinstance(i, AxisName)]
    _unique(named, spec.text, f"output {spec.text[spec.output.start:spec.output.end]!r}")
    return _expand_rest(spec.output.items, [a for _, a in named],
                        [a for a in by_name.values() if a not in [x for _, x in named]])


def _expand_rest(items, named: list[Axis], rest: list[Axis]) -> tuple[Axis, ...]:
    """``items``' axes with ``...`` replaced by ``rest`` (``named`` gives each name's axis)."""
    out, it = [], iter(named)
    for item in items:
        out.extend(rest if isinstance(item, Rest) else [next(it)])
    return tuple(out)


def _unordered(spec: EinsumSpec, by_name: dict, aliases: _Aliases) -> tuple[Axis, ...]:
    """``{h w} -> out``: axes named in braces are summed unless in the output; others are kept."""
    side = spec.operands[0]
    listed = [(i, _axis_by_name(i, by_name, aliases, "braced")) for i in side.items if isinstance(i, AxisName)]
    _unique(listed, spec.text, "'{...}'")
    out_items = spec.output.items if spec.output is not None else ()
    kept = [(i, _axis_by_name(i, by_name, aliases, "output")) for i in out_items if isinstance(i, AxisName)]
    _unique(kept, spec.text, "the output")
    listed_axes, kept_axes = [a for _, a in listed], [a for _, a in kept]
    if spec.output is not None and spec.output.rest is not None:  # ... = every axis not named anywhere
        rest = [a for a in by_name.values() if a not in listed_axes and a not in kept_axes]
        return _expand_rest(out_items, kept_axes, rest)
    if side.rest is not None:  # {h ...}: every axis takes part; only the output's are kept
        return tuple(kept_axes)
    others = [a for a in by_name.values() if a not in listed_axes and a not in kept_axes]
    return tuple(others + kept_axes)


def _count(items: Sequence, word: str) -> str:
    return f"{len(items)} {word}{'' if len(items) == 1 else 's'}"


def _bind(item: AxisName, axis: Axis, where: str, bindings: dict, by_name: dict, aliases: _Aliases) -> None:
    """Bind the label ``item`` to ``axis`` (the axis at its position): checks it against an alias
    and against the label's earlier binding, and rejects a label that is another axis's name."""
    label, text = item.name, aliases.equation
    if label in aliases.table:
        target = aliases.target(label)
        if target != axis.name:
            fail("einsum", text, item.span,
                 f"label {label!r} is the alias {label}={target!r} but is bound to axis {axis.name!r} "
                 f"(size {axis.size}) by position ({where})")
        aliases.check(item, axis)
    elif label != axis.name and label in by_name:
        other = by_name[label]
        fail("einsum", text, item.span,
             f"label {label!r} is bound to axis {axis.name!r} (size {axis.size}) by position; use the "
             f"unordered form {{...}} to match by name ({where} is {axis.name!r}; the operands' axis "
             f"{label!r} (size {other.size}) is another axis)")
    previous = bindings.get(label)
    if previous is not None and previous[0].name != axis.name:
        before, _, first_where = previous
        fail("einsum", text, item.span,
             f"label {label!r} is bound to two axes: {before.name!r} (size {before.size}) as {first_where}, "
             f"and {axis.name!r} (size {axis.size}) as {where} here")
    bindings.setdefault(label, (axis, item, where))


def _ordered(spec: EinsumSpec, arrays: Sequence[NamedArray], by_name: dict,
             aliases: _Aliases) -> tuple[list[NamedArray], tuple[Axis, ...], tuple[Axis, ...]]:
    """``h w d, d w h -> h w``: each label stands for the array's axis at its position (``...``
    for the axes between) and, as a letter in ``jnp.einsum``, is its own dim: two labels for one
    axis are two dims. Returns the operands with each labelled axis renamed to its label (a
    label is its axis's name or no axis's name: :func:`_bind` checks), the result's axes in
    those names, and the result's real axes."""
    text = spec.text
    if len(spec.operands) != len(arrays):
        fail("einsum", text, (0, len(text)),
             f"equation {text!r} has {len(spec.operands)} operand specs for {len(arrays)} arrays")
    bindings: dict[str, tuple[Axis, AxisName, str]] = {}  # label -> (its axis, first use, where)
    labelled: set[str] = set()  # names of the axes some label stands for
    renamed = []
    for k, (side, a) in enumerate(zip(spec.operands, arrays)):
        labels = [i for i in side.items if isinstance(i, AxisName)]
        side_text = text[side.start:side.end]
        seen: set[str] = set()
        for item in labels:
            if item.name in seen:
                fail("einsum", text, item.span,
                     f"operand {k} spec {side_text!r} uses the label {item.name!r} twice (a label stands "
                     f"for one axis, and an array's axes are distinct)")
            seen.add(item.name)
        if side.rest is None and len(labels) != a.ndim:
            fail("einsum", text, side.span,
                 f"operand {k} spec {side_text!r} has {_count(labels, 'label')} but the array has {a.ndim} axes "
                 f"{_axes_str(a.axes)} (one label per axis, in order, or '...' for the rest)")
        if side.rest is not None and len(labels) > a.ndim:
            fail("einsum", text, side.span,
                 f"operand {k} spec {side_text!r} has {_count(labels, 'label')} besides '...' but the array has "
                 f"only {a.ndim} axes {_axes_str(a.axes)}")
        cut = side.items.index(side.rest) if side.rest is not None else len(side.items)
        before, after = side.items[:cut], side.items[cut + 1:]
        positions = list(range(len(before))) + list(range(a.ndim - len(after), a.ndim))
        axes = list(a.axes)
        for item, pos in zip(labels, positions):
            _bind(item, a.axes[pos], f"operand {k}'s axis {pos}", bindings, by_name, aliases)
            labelled.add(a.axes[pos].name)
            axes[pos] = Axis(item.name, a.axes[pos].size)
        renamed.append(NamedArray(a.array, tuple(axes)))
    for k, r in enumerate(renamed):  # an axis under '...' here but labelled elsewhere: which dim is it?
        for x in r.axes:
            if x.name in labelled and x.name not in bindings:
                label = next(n for n, (ax, *_) in bindings.items() if ax.name == x.name)
                fail("einsum", text, spec.operands[k].span,
                     f"axis {x.name!r} is under '...' in operand {k} but labelled {label!r} elsewhere: label it "
                     f"in every operand, or match by name with '{{...}} ->'")
    label_axes = {x.name: x for x in merge_axes(*(r.axes for r in renamed), what="operands of einsum")}
    if spec.output is None:  # no '->': the dims in exactly one operand
        out = tuple(x for x in label_axes.values() if sum(r.has_axis(x.name) for r in renamed) == 1)
        real = tuple(_real_axis(x, bindings) for x in out)
        if len({x.name for x in real}) != len(real):
            fail("einsum", text, (0, len(text)),
                 f"the result would have the axes {_axes_str(real)}, one of them twice (two labels for one "
                 f"axis, each in one operand): write the output after '->'")
        return renamed, out, real
    named = []
    for item in spec.output.items:
        if not isinstance(item, AxisName):
            continue
        if item.name in bindings:
            aliases.target(item.name)  # marks an alias used
            named.append((item, bindings[item.name][0], label_axes[item.name]))
        elif item.name in aliases.table:  # an alias stands for its axis even if no operand label uses it
            axis = _axis_by_name(item, by_name, aliases, "output")
            labels = [n for n, (ax, *_) in bindings.items() if ax.name == axis.name]
            if len(labels) > 1:
                fail("einsum", text, item.span,
                     f"output alias {item.name!r} stands for axis {axis.name!r}, which the labels "
                     f"{', '.join(repr(n) for n in labels)} stand for as separate dims: use one of the labels")
            named.append((item, axis, label_axes[labels[0]] if labels else label_axes.get(axis.name, axis)))
        else:
            if item.name in by_name:
                names = [n for n, (ax, *_) in bindings.items() if ax.name == item.name]
                hint = (f"the operands' axis {item.name!r} is labelled {names[0]!r}" if names else
                        f"the operands' axis {item.name!r} is under '...': label it on the left, or match by "
                        f"name with '{{...}} ->' or '-> ...'")
            else:
                hint = f"the labels are {', '.join(repr(n) for n in bindings) or 'none'}"
            fail("einsum", text, item.span,
                 f"output label {item.name!r} stands for no axis: an ordered equation's labels are bound by "
                 f"position on the left ({hint})")
    out_text = text[spec.output.start:spec.output.end]
    _unique([(item, real) for item, real, _ in named], text, f"output {out_text!r}")
    rest = [x for x in label_axes.values() if x.name not in bindings and x not in [r for _, r, _ in named]]
    out = _expand_rest(spec.output.items, [dim for *_, dim in named], rest)
    return renamed, out, tuple(_real_axis(x, bindings) for x in out)


def _real_axis(dim: Axis, bindings: dict) -> Axis:
    """The axis a dim of :func:`_ordered`'s label space stands for."""
    return bindings[dim.name][0] if dim.name in bindings else dim


def einsum(equation: str, *arrays: NamedArray, precision=None, preferred_element_type=None,
           _dot_general: Optional[Callable] = None, out_sharding=None, **axis_aliases) -> NamedArray:
    """Einstein summation by axis names, in Haliax's three modes (the string picks the mode).

    *Ordered* (``jnp.einsum`` with words for letters): each operand's spec has one label per
    axis, in the array's order (``...`` for a run of axes). A label stands for the axis at its
    position, whatever that axis's name, and is one dim of the sum, as a letter of
    ``jnp.einsum`` is: labels the output does not list are summed, and the result has the
    axes of the output's labels. Two labels for one axis are two dims (``"h w d, e -> h w"``
    sums ``d`` and ``e`` separately, as Haliax does). Output ``...`` stands for the axes no
    label stands for (those under the operands' ``...``, matched by name).

    >>> import namax as nx
    >>> H, W, D = nx.make_axes(H=2, W=3, D=4)
    >>> a, b = nx.ones((H, W, D)), nx.ones((D, W, H))
    >>> nx.einsum("h w d, d w h -> h w", a, b).axes
    (Axis('H', 2), Axis('W', 3))
    >>> v = nx.ones((D,))
    >>> nx.einsum("h w d, e -> h w", a, v).axes  # d and e: two dims, each summed
    (Axis('H', 2), Axis('W', 3))
    >>> nx.einsum("... d, d -> ...", a, v).axis_names  # ... is H W
    ('H', 'W')

    A label stands for one axis, and a label that is another axis's name is an error:

    >>> nx.einsum("h w d, w d -> h", a, nx.ones((D, W)))
    Traceback (most recent call last):
    ...
    namax.ops.axis_string.AxisStringError: einsum: label 'w' is bound to two axes: 'W' (size 3) as operand 0's axis 1, and 'D' (size 4) as operand 1's axis 0 here at column 8
        h w d, w d -> h
               ^
    >>> nx.einsum("W H D, D -> W", a, nx.ones((D,)))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    namax.ops.axis_string.AxisStringError: einsum: label 'W' is bound to axis 'H' (size 2) by position; use the unordered form {...} to match by name (...) at column 1
        W H D, D -> W
        ^

    Without ``->`` the result keeps the axes that are in exactly one operand.

    >>> B, Hh, Ww, C, E = nx.make_axes(b=2, h=3, w=4, c=5, e=6)
    >>> x, k = nx.ones((B, Hh, Ww, C)), nx.ones((C, E))
    >>> nx.einsum("b h w c, c e", x, k).axis_names
    ('b', 'h', 'w', 'e')

    *Unordered* (one braced spec for all operands): the braced axes are matched by name and
    summed unless the output names them; the other axes are kept, in front of the output's.
    ``...`` in the output stands for every axis named nowhere; ``{a ...}`` sums every axis
    the output does not name.

    >>> nx.einsum("{c} ->", x, k).axis_names
    ('b', 'h', 'w', 'e')
    >>> nx.einsum("{h w} -> ...", x, k).axis_names
    ('b', 'c', 'e')
    >>> nx.einsum("{b ...} -> b", x, k).axis_names
    ('b',)

    *Output only*: list the result's axes; every other axis is summed.

    >>> nx.einsum("-> e b", x, k).axis_names
    ('e', 'b')

    Keyword arguments other than the ones below are *axis aliases*: a name in the equation
    standing for an axis (an ``Axis``, whose size is checked, or a name), for generic code.

    >>> nx.einsum("{x} -> y", x, k, x=C, y="e").axis_names
    ('b', 'h', 'w', 'e')

    ``precision`` and ``preferred_element_type`` are as in ``jax.lax.dot_general``;
    ``_dot_general`` replaces ``jax.lax.dot_general`` for every product (e.g. a quantized
    one); ``out_sharding`` is the result's sharding (for its axes in output order). Two
    operands become one ``dot_general`` in the backend's fast form (see :mod:`namax.layout`).
    """
    spec = parse_einsum(equation)
    for i, a in enumerate(arrays):
        if not isinstance(a, NamedArray):
            raise TypeError(f"einsum: operand {i} is a {type(a).__name__}, not a NamedArray; name its axes first")
    if not arrays:
        raise TypeError(f"einsum: no operands for the equation {equation!r}")
    by_name = {a.name: a for a in merge_axes(*(a.axes for a in arrays), what="operands of einsum")}
    aliases = _Aliases(axis_aliases, equation)
    first = spec.operands[0]
    first_is_ordered = False
    if len(spec.operands) == 1 and not first.items and not first.unordered and spec.output is not None:
        out_axes = _output_only(spec, by_name, aliases)
    elif first.unordered:
        out_axes = _unordered(spec, by_name, aliases)
    else:
        arrays, out_axes, real_axes = _ordered(spec, arrays, by_name, aliases)
        first_is_ordered = True
        by_name = {x.name: x for a in arrays for x in a.axes}
    aliases.check_all_used()
    out_names = {x.name for x in out_axes}
    if len(arrays) == 2:  # one dot_general in the backend's fast form (see namax.layout)
        contracted = [n for n in by_name if n not in out_names]
        out = _dot2(arrays[0], arrays[1], contracted, out_axes, precision, preferred_element_type,
                    _dot_general, out_sharding)
    elif _dot_general is not None and len(arrays) > 2:
        out = _einsum_chain(arrays, out_axes, precision, preferred_element_type, _dot_general, out_sharding)
    else:
        out = _einsum_raw(arrays, out_axes, precision, preferred_element_type, out_sharding)
    return wrap(out, real_axes if first_is_ordered else out_axes)


__all__ = ["dot", "einsum"]
