"""Shape operations by name: rename, broadcast, rearrange, flatten/unflatten, split,
concatenate, stack, unbind, roll, pad."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from ..axis import Axis, AxisSelection, AxisSelector, AxisSpec, axis_name, check_unique, ensure_tuple, merge_axes
from ..named import NamedArray, _axes_str, align, wrap
from .axis_string import AxisName, Group, Item, RearrangeSpec, Rest, fail, parse_rearrange


def rename(x: NamedArray, renames: Mapping[AxisSelector, AxisSelector]) -> NamedArray:
    """Rename axes: ``rename(x, {"position": "key_position"})``; the data is unchanged.

    >>> import namax as nx
    >>> nx.rename(nx.zeros(nx.Axis("position", 4)), {"position": "key_position"}).axes
    (Axis('key_position', 4),)
    """
    table = {}
    for old, new in renames.items():
        name = axis_name(old)
        ax = x.resolve_axis(name)
        if isinstance(new, Axis) and new.size != ax.size:
            raise ValueError(f"rename: axis {name!r} has size {ax.size} but the new axis {new} has size {new.size}")
        table[name] = Axis(axis_name(new), ax.size)
    return wrap(x.array, tuple(table.get(a.name, a) for a in x.axes))


def broadcast_to(x: NamedArray, axes: AxisSelection) -> NamedArray:
    """Broadcast ``x`` to exactly ``axes`` (in that order); every axis of ``x`` must be among them.

    >>> import namax as nx
    >>> B, E = nx.make_axes(batch=2, embed=3)
    >>> nx.broadcast_to(nx.arange(E), (E, B)).array.tolist()
    [[0, 0], [1, 1], [2, 2]]
    """
    axes = tuple(x.resolve_axis(a) if isinstance(a, str) else a for a in ensure_tuple(axes))
    merge_axes(x.axes, axes, what="array and target axes")
    raw = align(x, axes)
    return wrap(jnp.broadcast_to(raw, tuple(a.size for a in axes)), axes)


def broadcast_axis(x: NamedArray, axis: Axis | Sequence[Axis]) -> NamedArray:
    """Add new axes in front of ``x``'s (axes ``x`` already has are left in place).

    >>> import namax as nx
    >>> Pos, KPos = nx.Axis("position", 3), nx.Axis("key_position", 3)
    >>> nx.arange(Pos).broadcast_axis(KPos).axes
    (Axis('key_position', 3), Axis('position', 3))
    """
    new = tuple(a for a in ensure_tuple(axis) if not x.has_axis(a))
    for a in ensure_tuple(axis):
        if not isinstance(a, Axis):
            raise TypeError(f"broadcast_axis needs Axis objects (with sizes), got {a!r}")
        if x.has_axis(a):
            x.axis_index(a)  # size check
    return broadcast_to(x, new + x.axes)


def _resolve_new_axis(new_axis: AxisSelector, size: int, what: str) -> Axis:
    """``new_axis`` as an Axis of ``size``; an Axis given with another size is an error."""
    if isinstance(new_axis, Axis):
        if new_axis.size != size:
            raise ValueError(f"{what}: the new axis {new_axis} must have size {size}, got {new_axis.size}")
        return new_axis
    return Axis(axis_name(new_axis), size)


def rearrange(x: NamedArray, axes: str | Sequence[AxisSelector | type(Ellipsis)] | None = None, /,
              **bindings: AxisSelector | int) -> NamedArray:
    """Reorder, flatten and split axes: by a sequence of axes, or by a rearrange string.

    A sequence permutes ``x``'s axes into its order; ``...`` stands for the rest, in order.

    >>> import namax as nx
    >>> B, H, W, C = nx.make_axes(b=2, h=3, w=4, c=5)
    >>> x = nx.zeros((B, H, W, C))
    >>> nx.rearrange(x, ("c", ..., "b")).axis_names
    ('c', 'h', 'w', 'b')

    A string ``"lhs -> rhs"`` names ``x``'s axes on the left, in order (``...`` for a run of
    them) or, in braces, by name in any order; the right lists the result's axes, ``...``
    being those it does not name. ``(new: a b)`` on the right flattens ``a b`` (row-major)
    into a new axis ``new``:

    >>> nx.rearrange(x, "b h w c -> b c (hw: h w)").axes
    (Axis('b', 2), Axis('c', 5), Axis('hw', 12))
    >>> x.rearrange("{h w} -> ... (hw: h w)").axis_names
    ('b', 'c', 'hw')

    On the left, ``(old: a b)`` splits axis ``old`` into ``a b``; keyword arguments give the
    sizes (all but one part's), or a binding ``name=Axis`` / ``name="axis name"``:

    >>> y = nx.zeros((B, nx.Axis("hw", 12), C))
    >>> nx.rearrange(y, "... (hw: h w) c -> ... h w c", h=3).axes
    (Axis('b', 2), Axis('h', 3), Axis('w', 4), Axis('c', 5))
    """
    if axes is None:
        if "expression" in bindings:
            axes = bindings.pop("expression")
        elif "axes" in bindings:
            axes = bindings.pop("axes")
        else:
            raise TypeError("rearrange needs the new order: a sequence of axes or a string 'lhs -> rhs'")
    if isinstance(axes, str):
        return _rearrange_string(x, axes, bindings)
    if bindings:
        raise TypeError(
            f"rearrange: keyword bindings {sorted(bindings)} go with a string expression, not a sequence of axes"
        )
    spec = tuple(axes)
    if sum(1 for a in spec if a is Ellipsis) > 1:
        raise ValueError(f"rearrange: at most one '...' allowed, got {spec!r}")
    named_spec = [a for a in spec if a is not Ellipsis]
    check_unique(named_spec, what="rearrange's axes")
    positions = [x.axis_index(a) for a in named_spec]
    if Ellipsis in spec:
        chosen = set(positions)
        rest = [i for i in range(x.ndim) if i not in chosen]
        cut = spec.index(Ellipsis)
        order = positions[:cut] + rest + positions[cut:]
    else:
        if len(positions) != x.ndim:
            missing = [a.name for i, a in enumerate(x.axes) if i not in set(positions)]
            raise ValueError(
                f"rearrange: axes {missing} of {_axes_str(x.axes)} are not placed; list them or use '...'"
            )
        order = positions
    array = x.array if order == list(range(x.ndim)) else jnp.transpose(x.array, order)
    return wrap(array, tuple(x.axes[i] for i in order))


class _Bindings:
    """rearrange's keyword bindings: ``name=int`` a size, ``name=Axis`` or ``name="other"`` an axis."""

    def __init__(self, bindings: Mapping[str, Any], spec: RearrangeSpec):
        for key, value in bindings.items():
            is_size = isinstance(value, int) and not isinstance(value, bool) and value > 0
            if not (is_size or isinstance(value, (Axis, str))):
                raise TypeError(f"rearrange: binding {key}={value!r} must be a size (int > 0), an Axis or an axis name")
        names = {n.name for side in (spec.lhs, spec.rhs) for item in side.items for n in _names_in(item)}
        unused = [k for k in bindings if k not in names]
        if unused:
            raise ValueError(f"rearrange: binding{'s' if len(unused) > 1 else ''} {', '.join(unused)} "
                             f"not used in {spec.text!r}")
        self.table, self.text = dict(bindings), spec.text

    def name(self, item: AxisName) -> str:
        """The axis name ``item`` stands for."""
        value = self.table.get(item.name)
        return axis_name(value) if isinstance(value, (Axis, str)) else item.name

    def size(self, item: AxisName) -> int | None:
        value = self.table.get(item.name)
        return value.size if isinstance(value, Axis) else value if isinstance(value, int) else None

    def check(self, item: AxisName, axis: Axis) -> None:
        """A size bound to ``item`` must be ``axis``'s size."""
        size = self.size(item)
        if size is not None and size != axis.size:
            fail("rearrange", self.text, item.span,
                 f"{item.name!r} is bound to size {size} but axis {axis.name!r} has size {axis.size}")


def _names_in(item: Item) -> list[AxisName]:
    if isinstance(item, AxisName):
        return [item]
    if isinstance(item, Group):
        return ([item.name] if item.name is not None else []) + list(item.parts)
    return []


def _split_parts(group: Group, axis: Axis, b: _Bindings) -> list[Axis]:
    """The axes that ``group``'s parts split ``axis`` into (one part's size may be left out)."""
    text = b.text
    sizes = [b.size(p) for p in group.parts]
    unknown = [p.name for p, s in zip(group.parts, sizes) if s is None]
    known = math.prod(s for s in sizes if s is not None)
    parts_text = text[group.start:group.end]
    if len(unknown) > 1:
        fail("rearrange", text, group.span,
             f"splitting axis {axis.name!r} (size {axis.size}) into {parts_text} needs the sizes of all parts "
             f"but one; none given for {', '.join(map(repr, unknown))} (pass e.g. {unknown[0]}=...)")
    if (unknown and axis.size % known) or (not unknown and known != axis.size):
        given = " * ".join(f"{p.name}={s}" for p, s in zip(group.parts, sizes) if s is not None)
        fail("rearrange", text, group.span,
             f"cannot split axis {axis.name!r} of size {axis.size} into {parts_text}: the sizes {given} "
             f"multiply to {known}, which {'does not divide' if unknown else 'is not'} {axis.size}")
    return [Axis(b.name(p), s if s is not None else axis.size // known) for p, s in zip(group.parts, sizes)]


def _bind_left(x: NamedArray, spec: RearrangeSpec, b: _Bindings) -> tuple[list[list[Axis]], dict[str, Axis]]:
    """For each axis of ``x``, the axes it becomes (split or not); and each left-side name's axis."""
    text, side = spec.text, spec.lhs
    pieces: list[list[Axis] | None] = [None] * x.ndim
    labels: dict[str, Axis] = {}
    owner: dict[str, AxisName] = {}

    def claim(item: AxisName | Group, index: int) -> None:
        axis = x.axes[index]
        if pieces[index] is not None:
            fail("rearrange", text, item.span, f"axis {axis.name!r} is named twice on the left")
        if isinstance(item, AxisName):
            b.check(item, axis)
            pieces[index] = [axis]
            labels[item.name] = axis
            return
        if item.name is not None and item.name.name not in [p.name for p in item.parts]:
            b.check(item.name, axis)  # (in "(h: ph h)" a size for h is the new part's)
        pieces[index] = _split_parts(item, axis, b)
        for part, new in zip(item.parts, pieces[index]):
            if part.name in labels:
                fail("rearrange", text, part.span, f"{part.name!r} is named twice on the left")
            labels[part.name] = new

    def lookup(item: AxisName, where: int | None) -> int:
        target = b.name(item)
        via = f" (bound to {target!r})" if target != item.name else ""
        if not x.has_axis(target):
            fail("rearrange", text, item.span,
                 f"the array has no axis {target!r}{via}; its axes are {_axes_str(x.axes)}")
        index = x.axis_names.index(target)
        if where is not None and index != where:
            fail("rearrange", text, item.span,
                 f"{item.name!r}{via} is at position {where} of the left side but the array's axis {where} is "
                 f"{x.axes[where].name!r} ({target!r} is its axis {index}); an ordered left side lists the axes "
                 f"in the array's order (or match by name with '{{...}}'); axes {_axes_str(x.axes)}")
        return index

    if side.unordered:
        for item in side.items:
            if isinstance(item, Rest):
                continue
            head = item if isinstance(item, AxisName) else item.name
            if head is None:
                fail("rearrange", text, item.span, "in braces a split names the axis it splits: (old: a b)")
            claim(item, lookup(head, None))
    else:
        names = [i for i in side.items if not isinstance(i, Rest)]
        side_text = text[side.start:side.end]
        if (side.rest is None and len(names) != x.ndim) or len(names) > x.ndim:
            fail("rearrange", text, side.span if side.items else (side.start, side.start + 1),
                 f"the left side {side_text!r} lists {len(names)} axes{' besides ...' if side.rest else ''} "
                 f"but the array has {x.ndim}: {_axes_str(x.axes)}"
                 + ("" if side.rest or len(names) > x.ndim else " (list them all in order, or add '...')"))
        cut = side.items.index(side.rest) if side.rest is not None else len(side.items)
        positions = list(range(cut)) + list(range(x.ndim - (len(side.items) - cut - 1), x.ndim))
        for item, pos in zip(names, positions):
            head = item if isinstance(item, AxisName) else item.name
            if head is not None:
                lookup(head, pos)
            claim(item, pos)
    for i, p in enumerate(pieces):
        if p is None:
            pieces[i] = [x.axes[i]]
    seen: dict[str, str] = {}
    for i, p in enumerate(pieces):
        for ax in p:
            if ax.name in seen:
                fail("rearrange", text, side.span,
                     f"after splitting there would be two axes named {ax.name!r} (from {seen[ax.name]!r} "
                     f"and {x.axes[i].name!r}); choose another name")
            seen[ax.name] = x.axes[i].name
    return pieces, labels


def _rearrange_string(x: NamedArray, expression: str, bindings: Mapping[str, Any]) -> NamedArray:
    """``rearrange(x, "lhs -> rhs", **bindings)``: split (reshape), permute, flatten (reshape)."""
    spec = parse_rearrange(expression)
    if not isinstance(x, NamedArray):
        raise TypeError(f"rearrange: expected a NamedArray, got {type(x).__name__}")
    text = spec.text
    b = _Bindings(bindings, spec)
    pieces, labels = _bind_left(x, spec, b)
    middle = [ax for p in pieces for ax in p]
    by_name = {ax.name: ax for ax in middle}

    def resolve(item: AxisName) -> Axis:
        axis = labels[item.name] if item.name in labels else by_name.get(b.name(item))
        if axis is None:
            fail("rearrange", text, item.span,
                 f"{item.name!r} is not an axis of the left side; those are {_axes_str(middle)}")
        return axis

    used: dict[str, AxisName] = {}
    groups: list[list[Axis] | None] = []  # per right item: the middle axes it takes (None for ...)
    finals: list[Axis | None] = []
    for item in spec.rhs.items:
        if isinstance(item, Rest):
            groups.append(None)
            finals.append(None)
            continue
        if isinstance(item, Group) and item.name is None:
            fail("rearrange", text, item.span, "name the flattened axis: (new: a b)")
        members = [resolve(p) for p in (item.parts if isinstance(item, Group) else [item])]
        for p, ax in zip(item.parts if isinstance(item, Group) else [item], members):
            if ax.name in used:
                fail("rearrange", text, p.span, f"axis {ax.name!r} is used twice on the right")
            used[ax.name] = p
        groups.append(members)
        if isinstance(item, Group):
            size = math.prod(ax.size for ax in members)
            b.check(item.name, Axis(b.name(item.name), size))
            finals.append(Axis(b.name(item.name), size))
        else:
            finals.append(members[0])
    rest = [ax for ax in middle if ax.name not in used]
    if spec.rhs.rest is None and rest:
        fail("rearrange", text, spec.rhs.span if spec.rhs.items else (spec.rhs.start, spec.rhs.start + 1),
             f"axes {[ax.name for ax in rest]} of the left side are not placed on the right; "
             f"list them or add '...'")
    order: list[Axis] = []
    out_axes: list[Axis] = []
    taken = {ax.name for ax in rest} if spec.rhs.rest is not None else set()
    taken |= {f.name for item, f in zip(spec.rhs.items, finals) if isinstance(item, AxisName)}
    for item, members, final in zip(spec.rhs.items, groups, finals):
        order.extend(rest if members is None else members)
        out_axes.extend(rest if final is None else [final])
        if isinstance(item, Group):
            if final.name in taken:
                fail("rearrange", text, item.name.span,
                     f"the result would have two axes named {final.name!r}; name the flattened axis differently")
            taken.add(final.name)
    array = x.array
    if len(middle) != x.ndim:
        array = jnp.reshape(array, tuple(ax.size for ax in middle))
    perm = [middle.index(ax) for ax in order]
    if perm != list(range(len(perm))):
        array = jnp.transpose(array, perm)
    if len(out_axes) != len(order):
        array = jnp.reshape(array, tuple(ax.size for ax in out_axes))
    return wrap(array, tuple(out_axes))


def flatten_axes(x: NamedArray, old_axes: AxisSelection, new_axis: AxisSelector) -> NamedArray:
    """Merge ``old_axes`` into one ``new_axis``, row-major in the order given.

    The new axis sits where the earliest (in ``x``) of the old axes was; ``new_axis`` may be
    a name or an Axis whose size is the product of the old sizes.

    >>> import namax as nx
    >>> B, P, E = nx.make_axes(batch=2, position=3, embed=4)
    >>> nx.flatten_axes(nx.zeros((B, P, E)), ("batch", "embed"), "token").axes
    (Axis('token', 8), Axis('position', 3))
    """
    old = ensure_tuple(old_axes)
    if not old:
        raise ValueError("flatten_axes: old_axes is empty")
    check_unique(old, what="flatten_axes's old_axes")
    idx = [x.axis_index(a) for a in old]
    size = math.prod(x.axes[i].size for i in idx)
    new = _resolve_new_axis(new_axis, size, "flatten_axes")
    rest = [i for i in range(x.ndim) if i not in set(idx)]
    if new.name in {x.axes[i].name for i in rest}:
        raise ValueError(f"flatten_axes: new axis name {new.name!r} is already an axis of {_axes_str(x.axes)}")
    cut = sum(1 for i in rest if i < min(idx))
    order = rest[:cut] + idx + rest[cut:]
    array = x.array if order == list(range(x.ndim)) else jnp.transpose(x.array, order)
    kept = [x.axes[i] for i in rest]
    out_axes = tuple(kept[:cut] + [new] + kept[cut:])
    return wrap(jnp.reshape(array, tuple(a.size for a in out_axes)), out_axes)


def unflatten_axis(x: NamedArray, axis: AxisSelector, new_axes: AxisSpec) -> NamedArray:
    """Split one axis into ``new_axes`` (row-major), in its place; sizes must multiply to its size.

    >>> import namax as nx
    >>> T = nx.Axis("token", 6)
    >>> nx.unflatten_axis(nx.arange(T), "token", nx.make_axes(batch=2, position=3)).axes
    (Axis('batch', 2), Axis('position', 3))
    """
    i = x.axis_index(axis)
    new = ensure_tuple(new_axes)
    for a in new:
        if not isinstance(a, Axis):
            raise TypeError(f"unflatten_axis needs Axis objects (with sizes) for new_axes, got {a!r}")
    old = x.axes[i]
    if math.prod(a.size for a in new) != old.size:
        raise ValueError(
            f"unflatten_axis: new axes {_axes_str(new)} have {math.prod(a.size for a in new)} elements "
            f"but axis {old.name!r} has size {old.size}"
        )
    out_axes = x.axes[:i] + new + x.axes[i + 1 :]
    check_unique(out_axes, what="unflatten_axis's result")
    return wrap(jnp.reshape(x.array, tuple(a.size for a in out_axes)), out_axes)


def split(x: NamedArray, axis: AxisSelector, new_axes: Sequence[Axis]) -> list[NamedArray]:
    """Cut ``axis`` into consecutive pieces, one per new axis (whose sizes sum to its size).

    >>> import namax as nx
    >>> a, b = nx.split(nx.arange(nx.Axis("x", 5)), "x", [nx.Axis("head", 2), nx.Axis("tail", 3)])
    >>> a.array.tolist(), b.axes
    ([0, 1], (Axis('tail', 3),))
    """
    i = x.axis_index(axis)
    new = list(new_axes)
    for a in new:
        if not isinstance(a, Axis):
            raise TypeError(f"split needs Axis objects (with sizes) for new_axes, got {a!r}")
    total = sum(a.size for a in new)
    if total != x.axes[i].size:
        raise ValueError(
            f"split: new axes {_axes_str(new)} have sizes summing to {total} "
            f"but axis {x.axes[i].name!r} has size {x.axes[i].size}"
        )
    pieces = []
    start = 0
    for a in new:
        piece = jax.lax.slice_in_dim(x.array, start, start + a.size, axis=i)
        out_axes = x.axes[:i] + (a,) + x.axes[i + 1 :]
        check_unique(out_axes, what="split's result")
        pieces.append(wrap(piece, out_axes))
        start += a.size
    return pieces


def _same_axes(arrays: Sequence[NamedArray], skip: str | None, what: str) -> None:
    """Every array has the axes of the first (sizes too), ignoring the axis ``skip``."""
    first = arrays[0]
    ref = {a.name: a.size for a in first.axes if a.name != skip}
    for k, arr in enumerate(arrays[1:], start=1):
        if not isinstance(arr, NamedArray):
            raise TypeError(f"{what}: argument {k} is a {type(arr).__name__}, not a NamedArray")
        other = {a.name: a.size for a in arr.axes if a.name != skip}
        if other != ref:
            raise ValueError(
                f"{what}: array {k} has axes {_axes_str(arr.axes)} but array 0 has {_axes_str(first.axes)}"
                + (f" (apart from {skip!r})" if skip else "")
            )


def concatenate(axis: AxisSelector, arrays: Sequence[NamedArray]) -> NamedArray:
    """Join ``arrays`` along the axis named ``axis``; their other axes must agree (any order).

    The result's axis is ``axis``: an Axis must have the summed size, a name takes it.

    >>> import namax as nx
    >>> a, b = nx.arange(nx.Axis("x", 2)), nx.arange(nx.Axis("x", 3))
    >>> nx.concatenate("x", [a, b]).array.tolist()
    [0, 1, 0, 1, 2]
    """
    arrays = list(arrays)
    if not arrays:
        raise ValueError("concatenate: no arrays given")
    if not isinstance(arrays[0], NamedArray):
        raise TypeError(f"concatenate: argument 0 is a {type(arrays[0]).__name__}, not a NamedArray")
    name = axis_name(axis)
    for k, arr in enumerate(arrays):
        if isinstance(arr, NamedArray) and not arr.has_axis(name):
            raise ValueError(f"concatenate: array {k} with axes {_axes_str(arr.axes)} has no axis {name!r}")
    _same_axes(arrays, name, "concatenate")
    order = arrays[0].axis_names
    raws = [rearrange(a, order).array if a.axis_names != order else a.array for a in arrays]
    i = arrays[0].axis_index(name)
    total = sum(a.axis_size(name) for a in arrays)
    new = _resolve_new_axis(axis, total, "concatenate")
    out_axes = arrays[0].axes[:i] + (new,) + arrays[0].axes[i + 1 :]
    return wrap(jnp.concatenate(raws, axis=i), out_axes)


def stack(axis: AxisSelector, arrays: Sequence[NamedArray]) -> NamedArray:
    """Stack same-axis arrays along a new leading ``axis`` (of size ``len(arrays)``).

    >>> import namax as nx
    >>> E = nx.Axis("embed", 3)
    >>> nx.stack("layer", [nx.zeros(E), nx.ones(E)]).axes
    (Axis('layer', 2), Axis('embed', 3))
    """
    arrays = list(arrays)
    if not arrays:
        raise ValueError("stack: no arrays given")
    if not isinstance(arrays[0], NamedArray):
        raise TypeError(f"stack: argument 0 is a {type(arrays[0]).__name__}, not a NamedArray")
    _same_axes(arrays, None, "stack")
    new = _resolve_new_axis(axis, len(arrays), "stack")
    if arrays[0].has_axis(new.name):
        raise ValueError(f"stack: axis {new.name!r} is already an axis of the arrays {_axes_str(arrays[0].axes)}")
    order = arrays[0].axis_names
    raws = [rearrange(a, order).array if a.axis_names != order else a.array for a in arrays]
    return wrap(jnp.stack(raws, axis=0), (new,) + arrays[0].axes)


def unbind(x: NamedArray, axis: AxisSelector) -> list[NamedArray]:
    """The slices of ``x`` along ``axis``, each without that axis.

    >>> import namax as nx
    >>> QKV, E = nx.make_axes(qkv=3, embed=2)
    >>> q, k, v = nx.zeros((QKV, E)).unbind("qkv")
    >>> q.axes
    (Axis('embed', 2),)
    """
    i = x.axis_index(axis)
    rest = x.axes[:i] + x.axes[i + 1 :]
    return [wrap(jax.lax.index_in_dim(x.array, k, axis=i, keepdims=False), rest) for k in range(x.axes[i].size)]


def roll(x: NamedArray, shift: Any, axis: AxisSelection) -> NamedArray:
    """``jnp.roll`` along named axes (``shift`` an int, traced int, or one per axis).

    >>> import namax as nx
    >>> nx.roll(nx.arange(nx.Axis("x", 4)), 1, "x").array.tolist()
    [3, 0, 1, 2]
    """
    dims = tuple(x.axis_index(a) for a in ensure_tuple(axis))
    if isinstance(shift, (tuple, list)) and len(shift) != len(dims):
        raise ValueError(f"roll: {len(shift)} shifts given for {len(dims)} axes {ensure_tuple(axis)!r}")
    return wrap(jnp.roll(x.array, shift, axis=dims), x.axes)


def pad(
    x: NamedArray,
    pad_width: Mapping[AxisSelector, int | tuple[int, int]],
    mode: str = "constant",
    constant_values: Any = 0,
) -> NamedArray:
    """``jnp.pad`` by name: ``pad(x, {"position": (1, 2)})``; unlisted axes are not padded.

    A width is ``(before, after)`` or one int for both. Padded axes keep their names with
    the new sizes. ``mode`` is any ``jnp.pad`` mode; ``constant_values`` applies to "constant".

    >>> import namax as nx
    >>> nx.pad(nx.arange(nx.Axis("x", 2)), {"x": (1, 0)}).array.tolist()
    [0, 0, 1]
    """
    widths = [(0, 0)] * x.ndim
    for ax, w in pad_width.items():
        i = x.axis_index(ax)
        pair = (w, w) if isinstance(w, int) else tuple(w)
        if len(pair) != 2 or not all(isinstance(p, int) and p >= 0 for p in pair):
            raise ValueError(f"pad: width for axis {axis_name(ax)!r} must be an int >= 0 or (before, after), got {w!r}")
        widths[i] = pair
    kwargs = {"constant_values": constant_values} if mode == "constant" else {}
    out = jnp.pad(x.array, widths, mode=mode, **kwargs)
    out_axes = tuple(a.resize(a.size + lo + hi) for a, (lo, hi) in zip(x.axes, widths))
    return wrap(out, out_axes)


__all__ = [
    "rename", "broadcast_to", "broadcast_axis", "rearrange", "flatten_axes", "unflatten_axis",
    "split", "concatenate", "stack", "unbind", "roll", "pad",
]
