"""Axes: a name and a size; the helpers that turn axis specs into names; Haliax's axis algebra.

An axis spec is an Axis, a name, a sequence of them, or a ``{name: size}`` dict (size None:
unknown). The algebra (``union_axes``, ``intersect_axes``, ``eliminate_axes``,
``without_axes``, ``replace_axis``, ``resolve_axis``, ...) combines specs by name and
raises, naming the axis and both sizes, when one name has two sizes.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import types
from typing import Any, Iterable, Mapping, Optional, Sequence, Union


@dataclasses.dataclass(frozen=True)
class Axis:
    """A named dimension of a given size.

    >>> Pos = Axis("position", 1024)
    >>> KPos = Pos.alias("key_position")
    >>> (KPos.name, KPos.size)
    ('key_position', 1024)
    """

    name: str
    size: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"Axis name must be a non-empty string, got {self.name!r}")
        size = self.size
        # a size is an integer (int, numpy integer, anything with __index__): never a float that
        # int() would truncate (2.5 -> 2), a string, or a bool (numpy bools have no __index__)
        if isinstance(size, bool):
            raise TypeError(f"Axis {self.name!r}: size must be an int >= 0, got the bool {size!r}")
        try:
            size = operator.index(size)
        except TypeError:
            raise TypeError(f"Axis {self.name!r}: size must be an int >= 0, got {self.size!r} "
                            f"({type(self.size).__name__})") from None
        if size < 0:
            raise ValueError(f"Axis {self.name!r}: size must be an int >= 0, got {size}")
        if type(size) is not int or size is not self.size:
            object.__setattr__(self, "size", int(size))

    def alias(self, new_name: str) -> "Axis":
        """The same size under another name.

        >>> Axis("position", 8).alias("key_position")
        Axis('key_position', 8)
        """
        return Axis(new_name, self.size)

    def resize(self, size: int) -> "Axis":
        """The same name with another size.

        >>> Axis("position", 8).resize(4)
        Axis('position', 4)
        """
        return Axis(self.name, size)

    def __repr__(self) -> str:
        return f"Axis({self.name!r}, {self.size})"


AxisSelector = Union[Axis, str]
"""An axis given by an :class:`Axis` or by its name alone."""

AxisSpec = Union[Axis, Sequence[Axis]]
"""One axis or a tuple of axes (sizes known)."""

AxisSelection = Union[AxisSelector, Sequence[AxisSelector]]
"""One axis or several, each given by :class:`Axis` or by name."""


def make_axes(**sizes: int) -> tuple[Axis, ...]:
    """Axes from keyword sizes, in order: ``Pos, Embed = make_axes(pos=1024, embed=512)``.

    >>> make_axes(position=1024, embed=512)
    (Axis('position', 1024), Axis('embed', 512))
    """
    return tuple(Axis(name, size) for name, size in sizes.items())


def axis_name(ax: AxisSelection) -> Union[str, tuple[str, ...]]:
    """The name of an Axis or of a name; a tuple or list of them gives a tuple of names.

    >>> axis_name(Axis("embed", 4)), axis_name("embed"), axis_name((Axis("batch", 2), "embed"))
    ('embed', 'embed', ('batch', 'embed'))
    """
    if isinstance(ax, Axis):
        return ax.name
    if isinstance(ax, str):
        return ax
    if isinstance(ax, (tuple, list)) and all(isinstance(a, (Axis, str)) for a in ax):
        return tuple(a.name if isinstance(a, Axis) else a for a in ax)
    raise TypeError(f"Expected an Axis or an axis name (str), got {ax!r}")


def is_axis_selection(x: object) -> bool:
    """True for an Axis, a name, or a non-empty tuple/list of them.

    >>> is_axis_selection(("batch", Axis("embed", 4))), is_axis_selection(()), is_axis_selection(3)
    (True, False, False)
    """
    if isinstance(x, (Axis, str)):
        return True
    if isinstance(x, (tuple, list)) and len(x) > 0:
        return all(isinstance(a, (Axis, str)) for a in x)
    return False


def ensure_tuple(axes: AxisSelection | Iterable[AxisSelector]) -> tuple:
    """An axis selection as a tuple (a single Axis or name becomes a 1-tuple).

    >>> ensure_tuple("batch"), ensure_tuple(["batch", "embed"])
    (('batch',), ('batch', 'embed'))
    """
    if isinstance(axes, (Axis, str)):
        return (axes,)
    return tuple(axes)


def axis_names(axes: AxisSelection) -> tuple[str, ...]:
    """The names of an axis selection, as a tuple.

    >>> axis_names((Axis("batch", 2), "embed"))
    ('batch', 'embed')
    """
    return tuple(axis_name(a) for a in ensure_tuple(axes))


def check_unique(axes: Sequence[AxisSelector], what: str = "axes") -> None:
    """Raise if a name appears twice in ``axes``.

    >>> check_unique(("batch", Axis("batch", 2)))
    Traceback (most recent call last):
    ...
    ValueError: Duplicate axis name 'batch' in axes ('batch', 'batch')
    """
    names = [axis_name(a) for a in axes]
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"Duplicate axis name {n!r} in {what} {tuple(names)}")
        seen.add(n)


def merge_axes(*groups: Sequence[Axis], what: str = "operands") -> tuple[Axis, ...]:
    """Union of axes in order of first appearance; one name must have one size.

    >>> B, E, M = Axis("batch", 2), Axis("embed", 3), Axis("mlp", 4)
    >>> merge_axes((B, E), (E, M))
    (Axis('batch', 2), Axis('embed', 3), Axis('mlp', 4))
    """
    out: dict[str, Axis] = {}
    for group in groups:
        for ax in group:
            prev = out.get(ax.name)
            if prev is None:
                out[ax.name] = ax
            elif prev.size != ax.size:
                raise ValueError(
                    f"Axis {ax.name!r} has size {prev.size} in one of the {what} and size {ax.size} in another"
                )
    return tuple(out.values())


# --- axis algebra (Haliax's): specs as tuples of axes/names or as {name: size} dicts ---------

ShapeDict = Mapping[str, int]
"""Axes as a ``{name: size}`` dict."""

PartialShapeDict = Mapping[str, Optional[int]]
"""Axes as a ``{name: size or None}`` dict (None: the size is not known)."""

PartialAxisSpec = Sequence[Union[AxisSelector, types.EllipsisType]]
"""Axes and ``...`` (any number of other axes), as taken by rearrange and the partial order below."""


def _spec_str(spec: Any) -> str:
    """An axis spec for an error message: ``(batch:2, embed)`` or ``{'batch': 2}``."""
    if isinstance(spec, Mapping):
        return repr(dict(spec))
    items = (spec,) if isinstance(spec, (Axis, str)) else tuple(spec)
    return "(" + ", ".join(f"{a.name}:{a.size}" if isinstance(a, Axis) else str(a) for a in items) + ")"


def _check_same_size(name: str, size1: Optional[int], size2: Optional[int], spec1: Any, spec2: Any) -> None:
    if size1 is not None and size2 is not None and size1 != size2:
        raise ValueError(
            f"Axis {name!r} has size {size1} in {_spec_str(spec1)} but size {size2} in {_spec_str(spec2)}"
        )


def axis_spec_to_shape_dict(axis_spec: AxisSelection) -> dict[str, Optional[int]]:
    """An axis spec as a ``{name: size}`` dict, in order; a bare name has size None.

    >>> axis_spec_to_shape_dict((Axis("batch", 2), "embed"))
    {'batch': 2, 'embed': None}
    """
    if isinstance(axis_spec, Mapping):
        out = {}
        for name, size in axis_spec.items():
            if not isinstance(name, str):
                raise TypeError(f"axis spec dict keys must be axis names (str), got {name!r} in {dict(axis_spec)!r}")
            out[name] = size
        return out
    items = (axis_spec,) if isinstance(axis_spec, (Axis, str)) else axis_spec
    if not isinstance(items, (tuple, list)):
        raise TypeError(f"Expected an axis spec (Axis, name, sequence of them or a {{name: size}} dict), "
                        f"got {axis_spec!r}")
    out: dict[str, Optional[int]] = {}
    for ax in items:
        if isinstance(ax, Axis):
            name, size = ax.name, ax.size
        elif isinstance(ax, str):
            name, size = ax, None
        else:
            raise TypeError(f"Invalid entry {ax!r} in axis spec {items!r}: expected an Axis or an axis name")
        if name in out:
            raise ValueError(f"Axis {name!r} appears twice in axis spec {_spec_str(items)}")
        out[name] = size
    return out


def _dict_to_tuple(d: Mapping[str, Optional[int]]) -> tuple:
    """``{name: size}`` back to a tuple: an Axis where the size is known, else the name."""
    return tuple(name if size is None else Axis(name, size) for name, size in d.items())


def _like(template: Any, d: dict) -> Any:
    """``d`` as a dict if ``template`` is one, else as a tuple of axes/names."""
    return d if isinstance(template, Mapping) else _dict_to_tuple(d)


def concat_axes(a1: AxisSelection, a2: AxisSelection) -> AxisSelection:
    """``a1`` followed by ``a2``; an axis in both is an error. A dict first gives a dict.

    >>> B, E = Axis("batch", 2), Axis("embed", 3)
    >>> concat_axes(B, (E, "mlp")), concat_axes({"batch": 2}, E)
    ((Axis('batch', 2), Axis('embed', 3), 'mlp'), {'batch': 2, 'embed': 3})
    """
    d1, d2 = axis_spec_to_shape_dict(a1), axis_spec_to_shape_dict(a2)
    both = [name for name in d1 if name in d2]
    if both:
        raise ValueError(f"concat_axes: axes {both} are in both {_spec_str(a1)} and {_spec_str(a2)}")
    return _like(a1, {**d1, **d2})


concat_axis_specs = concat_axes


def union_axes(a1: AxisSelection, a2: AxisSelection) -> AxisSelection:
    """``a1`` then the axes of ``a2`` it lacks; a shared axis must agree in size (an unsized
    name agrees with any size, and keeps ``a1``'s entry). A dict on either side gives a dict.

    >>> B, E, M = Axis("batch", 2), Axis("embed", 3), Axis("mlp", 4)
    >>> union_axes((B, E), (E, M))
    (Axis('batch', 2), Axis('embed', 3), Axis('mlp', 4))
    """
    d1, d2 = axis_spec_to_shape_dict(a1), axis_spec_to_shape_dict(a2)
    for name, size in d2.items():
        if name in d1:
            _check_same_size(name, d1[name], size, a1, a2)
        else:
            d1[name] = size
    return d1 if isinstance(a1, Mapping) or isinstance(a2, Mapping) else _dict_to_tuple(d1)


def intersect_axes(ax1: AxisSelection, ax2: AxisSelection) -> AxisSelection:
    """The axes of ``ax1`` that ``ax2`` also has, in ``ax1``'s order, as ``ax2`` gives them
    (an Axis if ``ax2`` has a size, else the name); sizes must agree.

    >>> B, E = Axis("batch", 2), Axis("embed", 3)
    >>> intersect_axes((B, E), ("embed", Axis("mlp", 4))), intersect_axes((B, E), (E,))
    (('embed',), (Axis('embed', 3),))
    """
    d1, d2 = axis_spec_to_shape_dict(ax1), axis_spec_to_shape_dict(ax2)
    out: dict[str, Optional[int]] = {}
    for name, size in d1.items():
        if name in d2:
            _check_same_size(name, size, d2[name], ax1, ax2)
            out[name] = d2[name]
    return _like(ax1, out)


def _remove(axis_spec: AxisSelection, to_remove: AxisSelection, *, require: bool, check_sizes: bool,
            what: str) -> AxisSelection:
    d, rm = axis_spec_to_shape_dict(axis_spec), axis_spec_to_shape_dict(to_remove)
    for name, size in rm.items():
        if name not in d:
            if require:
                raise ValueError(f"{what}: axis {name!r} is not in {_spec_str(axis_spec)}")
            continue
        if check_sizes:
            _check_same_size(name, d[name], size, axis_spec, to_remove)
        del d[name]
    return _like(axis_spec, d)


def eliminate_axes(axis_spec: AxisSelection, to_remove: AxisSelection) -> AxisSelection:
    """``axis_spec`` without ``to_remove``; each removed axis must be present (with the same size).

    >>> eliminate_axes((Axis("batch", 2), Axis("embed", 3)), "batch")
    (Axis('embed', 3),)
    """
    return _remove(axis_spec, to_remove, require=True, check_sizes=True, what="eliminate_axes")


def without_axes(axis_spec: AxisSelection, to_remove: AxisSelection, allow_mismatched_sizes: bool = False
                 ) -> AxisSelection:
    """``axis_spec`` without whichever of ``to_remove`` it has (absent ones are skipped). A
    present axis of another size is an error unless ``allow_mismatched_sizes``.

    >>> without_axes((Axis("batch", 2), Axis("embed", 3)), ("embed", "mlp"))
    (Axis('batch', 2),)
    """
    return _remove(axis_spec, to_remove, require=False, check_sizes=not allow_mismatched_sizes,
                   what="without_axes")


def unsize_axes(axis_spec: AxisSelection, to_unsize: Optional[AxisSelection] = None) -> AxisSelection:
    """Drop sizes: every axis's (``to_unsize=None``; a single axis gives its name), or just
    those of ``to_unsize``, each of which must be present.

    >>> B, E = Axis("batch", 2), Axis("embed", 3)
    >>> unsize_axes((B, E)), unsize_axes(B), unsize_axes((B, E), "batch")
    (('batch', 'embed'), 'batch', ('batch', Axis('embed', 3)))
    """
    if to_unsize is None:
        if isinstance(axis_spec, Mapping):
            return {name: None for name in axis_spec_to_shape_dict(axis_spec)}
        if isinstance(axis_spec, (Axis, str)):
            return axis_name(axis_spec)
        return tuple(axis_spec_to_shape_dict(axis_spec))
    d = axis_spec_to_shape_dict(axis_spec)
    for name in axis_spec_to_shape_dict(to_unsize):
        if name not in d:
            raise ValueError(f"unsize_axes: axis {name!r} is not in {_spec_str(axis_spec)}")
        d[name] = None
    return _like(axis_spec, d)


def replace_axis(axis_spec: AxisSelection, old: AxisSelector, new: AxisSelection) -> AxisSelection:
    """``axis_spec`` with ``old`` replaced, in place, by the axis or axes ``new``.

    ``old`` must be present, and ``new`` may not bring a name ``axis_spec`` already has.

    >>> B, E = Axis("batch", 2), Axis("embed", 3)
    >>> replace_axis((B, E), "batch", (Axis("x", 4), Axis("y", 5)))
    (Axis('x', 4), Axis('y', 5), Axis('embed', 3))
    """
    d, repl = axis_spec_to_shape_dict(axis_spec), axis_spec_to_shape_dict(new)
    old_name = axis_name(old)
    if not isinstance(old_name, str):
        raise TypeError(f"replace_axis: old must be one Axis or name, got {old!r}")
    if old_name not in d:
        raise ValueError(f"replace_axis: axis {old_name!r} is not in {_spec_str(axis_spec)}")
    out: dict[str, Optional[int]] = {}
    for name, size in d.items():
        if name != old_name:
            out[name] = size
            continue
        for new_name, new_size in repl.items():
            if new_name in d and new_name != old_name:
                raise ValueError(f"replace_axis: replacing {old_name!r} by {_spec_str(new)} would give axis "
                                 f"{new_name!r} twice: {_spec_str(axis_spec)} already has it")
            out[new_name] = new_size
    return _like(axis_spec, out)


def is_axis_compatible(ax1: AxisSelector, ax2: AxisSelector) -> bool:
    """True when the two axes have the same name (as in Haliax, sizes are not compared).

    >>> is_axis_compatible(Axis("embed", 3), "embed"), is_axis_compatible("embed", "mlp")
    (True, False)
    """
    return axis_name(ax1) == axis_name(ax2)


def selects_axis(selector: AxisSelection, selected: AxisSelection) -> bool:
    """True when ``selector`` has every axis of ``selected``, with the same size where both give one.

    >>> B, E = Axis("batch", 2), Axis("embed", 3)
    >>> selects_axis((B, E), "batch"), selects_axis((B, E), Axis("batch", 5)), selects_axis(B, (B, E))
    (True, False, False)
    """
    have, want = axis_spec_to_shape_dict(selector), axis_spec_to_shape_dict(selected)
    for name, size in want.items():
        if name not in have:
            return False
        if size is not None and have[name] is not None and have[name] != size:
            return False
    return True


def axis_size(ax: AxisSpec) -> int:
    """The size of an Axis, or the product of the sizes of several (``{name: size}`` too).

    >>> axis_size(Axis("batch", 2)), axis_size((Axis("batch", 2), Axis("embed", 3))), axis_size({"mlp": 4})
    (2, 6, 4)
    """
    d = axis_spec_to_shape_dict(ax)
    unsized = [name for name, size in d.items() if size is None]
    if unsized:
        raise ValueError(f"axis_size: axis {unsized[0]!r} has no size (it is given by name only) in "
                         f"{_spec_str(ax)}; pass Axis objects")
    return math.prod(d.values())


def resolve_axis(axis_spec: AxisSpec, axis_selection: AxisSelection) -> AxisSpec:
    """The axes of ``axis_spec`` named by ``axis_selection``: one Axis for one selector, a
    tuple (or a dict, for a dict selection) for several. Missing axes and size mismatches raise.

    >>> B, E = Axis("batch", 2), Axis("embed", 3)
    >>> resolve_axis((B, E), "embed"), resolve_axis((B, E), ("embed", "batch"))
    (Axis('embed', 3), (Axis('embed', 3), Axis('batch', 2)))
    """
    have = axis_spec_to_shape_dict(axis_spec)
    want = axis_spec_to_shape_dict(axis_selection)
    out: dict[str, Optional[int]] = {}
    for name, size in want.items():
        if name not in have:
            raise ValueError(f"resolve_axis: axis {name!r} is not in {_spec_str(axis_spec)}")
        _check_same_size(name, have[name], size, axis_spec, axis_selection)
        out[name] = have[name]
    if isinstance(axis_selection, (Axis, str)):
        name = axis_name(axis_selection)
        if out[name] is None:
            raise ValueError(f"resolve_axis: axis {name!r} has no size in {_spec_str(axis_spec)} (given by name only)")
        return Axis(name, out[name])
    return _like(axis_selection, out)


def rearrange_for_partial_order(partial_order: PartialAxisSpec, axes: tuple) -> tuple:
    """Order ``axes`` to fit ``partial_order``: named axes where it puts them, the others in
    the ``...`` slots, keeping their order. Without ``...`` it must name exactly ``axes``.

    An unnamed axis goes to the first ``...`` slot that is still empty after the last named
    axis seen so far (or stays in the current slot if there is none).

    >>> B, E, M = Axis("batch", 2), Axis("embed", 3), Axis("mlp", 4)
    >>> rearrange_for_partial_order(("mlp", ..., "batch"), (B, E, M))
    (Axis('mlp', 4), Axis('embed', 3), Axis('batch', 2))
    """
    sizes = axis_spec_to_shape_dict(axes)

    def entry(name: str):
        return name if sizes[name] is None else Axis(name, sizes[name])

    if tuple(partial_order) == (Ellipsis,):
        return tuple(axes)
    named = [axis_name(a) for a in partial_order if a is not Ellipsis]
    if len(set(named)) != len(named):
        dup = next(n for n in named if named.count(n) > 1)
        raise ValueError(f"rearrange_for_partial_order: axis {dup!r} appears twice in the partial order "
                         f"{tuple(partial_order)}")
    if Ellipsis not in partial_order:
        if set(named) != set(sizes):
            raise ValueError(f"rearrange_for_partial_order: without '...' the order must name exactly the axes "
                             f"{_spec_str(axes)}, got {tuple(partial_order)}")
        return tuple(entry(n) for n in named)
    missing = [n for n in named if n not in sizes]
    if missing:
        raise ValueError(f"rearrange_for_partial_order: axes {missing} of the partial order are not in "
                         f"{_spec_str(axes)}")

    slots: list[list[str]] = [[] if a is Ellipsis else [axis_name(a)] for a in partial_order]
    slot_of = {slot[0]: i for i, slot in enumerate(slots) if slot}

    def first_empty(start: int) -> Optional[int]:
        return next((i for i in range(start, len(slots)) if not slots[i]), None)

    target = first_empty(0)
    for name in sizes:
        if name in slot_of:
            later = first_empty(max(slot_of[name] + 1, target))
            if later is not None:
                target = later
        else:
            slots[target].append(name)
    return tuple(entry(n) for slot in slots for n in slot)


def dblock(idx: Any, size: int):
    """The ``idx``-th block of ``size`` entries: ``dslice(idx * size, size)``.

    >>> import namax as nx
    >>> x = nx.arange(nx.Axis("position", 6))
    >>> x["position", dblock(1, 2)].array.tolist()
    [2, 3]
    """
    from .ops.indexing import dslice

    return dslice(idx * size, size)


def __getattr__(name: str) -> Any:
    # ``namax.axis.ds``/``dslice`` (Haliax has them here); they live with indexing, which imports this module
    if name in ("ds", "dslice"):
        from .ops import indexing

        return getattr(indexing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Axis", "AxisSelector", "AxisSelection", "AxisSpec", "PartialAxisSpec", "PartialShapeDict", "ShapeDict",
    "make_axes", "axis_name", "axis_size", "axis_spec_to_shape_dict", "concat_axes", "concat_axis_specs",
    "union_axes", "intersect_axes", "eliminate_axes", "without_axes", "unsize_axes", "replace_axis",
    "is_axis_compatible", "selects_axis", "resolve_axis", "rearrange_for_partial_order", "dblock",
]
