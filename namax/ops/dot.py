"""Contractions by name: ``dot`` (Haliax semantics) and ``einsum`` with axis names."""

from __future__ import annotations

import string
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp

from ..axis import Axis, AxisSelection, axis_names, ensure_tuple, is_axis_selection, merge_axes
from ..layout import dot_operands
from ..named import NamedArray, _axes_str, wrap


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
          precision, preferred_element_type) -> jax.Array:
    """One ``dot_general`` for two operands, then (if needed) a transpose to ``out_axes``.

    The operand order and dimension numbers come from ``namax.layout.dot_operands`` (the
    backend's fast form: a big operand first against a skinny one, else lhs contracting dims
    last, result in ``out_axes`` order if possible).
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
    out = jax.lax.dot_general(lhs.array, rhs.array, plan.dimension_numbers, precision=precision,
                              preferred_element_type=preferred_element_type)
    produced = list(plan.produced)
    if produced != want:
        if plan.barrier:  # keep XLA from folding the transpose back into the slow operand order
            out = jax.lax.optimization_barrier(out)
        out = jnp.transpose(out, [produced.index(n) for n in want])
    return out


def _einsum_raw(arrays: Sequence[NamedArray], out_axes: Sequence[Axis], precision,
                preferred_element_type) -> jax.Array:
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
    return jnp.einsum(f"{ins}->{out}", *(a.array for a in arrays), precision=precision,
                      preferred_element_type=preferred_element_type)


def einsum(equation: str, *arrays: NamedArray, precision=None, preferred_element_type=None) -> NamedArray:
    """Einstein summation with axis names: ``"batch embed, embed mlp -> batch mlp"``.

    Each operand's spec lists its axis names (any order; ``...`` stands for the rest);
    the output lists the result's axes in order. Without ``->`` the result keeps every
    axis that appears in exactly one operand. Axes missing from the output are summed.

    >>> import namax as nx
    >>> B, E, M = nx.Axis("batch", 2), nx.Axis("embed", 3), nx.Axis("mlp", 4)
    >>> nx.einsum("batch embed, embed mlp -> batch mlp", nx.ones((B, E)), nx.ones((E, M))).axes
    (Axis('batch', 2), Axis('mlp', 4))
    """
    if "->" in equation:
        lhs, rhs = equation.split("->")
    else:
        lhs, rhs = equation, None
    specs = [s.split() for s in lhs.split(",")]
    if len(specs) != len(arrays):
        raise ValueError(f"einsum: equation {equation!r} has {len(specs)} operand specs for {len(arrays)} arrays")
    for i, (spec, a) in enumerate(zip(specs, arrays)):
        if not isinstance(a, NamedArray):
            raise TypeError(f"einsum: operand {i} is a {type(a).__name__}, not a NamedArray")
        names = [n for n in spec if n != "..."]
        if len(set(names)) != len(names):
            raise ValueError(f"einsum: operand {i} spec {' '.join(spec)!r} names an axis twice")
        for n in names:
            if not a.has_axis(n):
                raise ValueError(f"einsum: operand {i} spec names axis {n!r} but the array has axes {_axes_str(a.axes)}")
        if "..." not in spec and len(names) != a.ndim:
            extra = [n for n in a.axis_names if n not in names]
            raise ValueError(f"einsum: operand {i} has axes {extra} not in its spec {' '.join(spec)!r} (add '...')")
    all_axes = merge_axes(*(a.axes for a in arrays), what="operands of einsum")
    by_name = {a.name: a for a in all_axes}
    if rhs is None:
        counts = {n: sum(a.has_axis(n) for a in arrays) for n in by_name}
        out_names = [n for n in by_name if counts[n] == 1]
    else:
        out_names = rhs.split()
        if "..." in out_names:
            mentioned = {n for s in specs for n in s} | set(out_names)
            rest = [n for n in by_name if n not in mentioned]
            i = out_names.index("...")
            out_names = out_names[:i] + rest + out_names[i + 1 :]
        for n in out_names:
            if n not in by_name:
                raise ValueError(f"einsum: output axis {n!r} is in no operand")
        if len(set(out_names)) != len(out_names):
            raise ValueError(f"einsum: output {rhs.strip()!r} names an axis twice")
    out_axes = tuple(by_name[n] for n in out_names)
    if len(arrays) == 2:  # one dot_general in the backend's fast form (see namax.layout)
        contracted = [n for n in by_name if n not in out_names]
        out = _dot2(arrays[0], arrays[1], contracted, out_axes, precision, preferred_element_type)
    else:
        out = _einsum_raw(arrays, out_axes, precision, preferred_element_type)
    return wrap(out, out_axes)


__all__ = ["dot", "einsum"]
