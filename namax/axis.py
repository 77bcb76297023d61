"""Axes: a name and a size, and the helpers that turn axis specs into names."""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence, Union


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
        if not isinstance(size, int):
            try:
                size = int(size)
            except Exception:
                raise TypeError(f"Axis {self.name!r}: size must be an int, got {self.size!r}") from None
            object.__setattr__(self, "size", size)
        if size < 0:
            raise ValueError(f"Axis {self.name!r}: size must be >= 0, got {size}")

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


def axis_name(ax: AxisSelector) -> str:
    """The name of an Axis or of a name.

    >>> axis_name(Axis("embed", 4)), axis_name("embed")
    ('embed', 'embed')
    """
    if isinstance(ax, Axis):
        return ax.name
    if isinstance(ax, str):
        return ax
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
