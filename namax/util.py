"""Small helpers with Haliax's names: tuples, array predicates, string-constant classes, ``field``.

>>> import namax as nx
>>> nx.util.ensure_tuple("batch"), nx.util.is_named_array(nx.zeros(nx.Axis("batch", 2)))
(('batch',), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable, Optional, TypeVar

import equinox as eqx

from .named import NamedArray

T = TypeVar("T")


def ensure_tuple(x: Any) -> tuple:
    """``x`` as a tuple: a string or a non-sequence becomes a 1-tuple, a sequence a tuple.

    >>> ensure_tuple("embed"), ensure_tuple(["batch", "embed"]), ensure_tuple(3)
    (('embed',), ('batch', 'embed'), (3,))
    """
    if isinstance(x, str):
        return (x,)
    if isinstance(x, Sequence):
        return tuple(x)
    return (x,)


def is_named_array(leaf: Any) -> bool:
    """True for a NamedArray (the usual ``is_leaf`` for ``jax.tree_util`` functions).

    >>> import jax, namax as nx
    >>> tree = {"w": nx.zeros(nx.Axis("embed", 2))}
    >>> [type(x).__name__ for x in jax.tree_util.tree_leaves(tree, is_leaf=is_named_array)]
    ['NamedArray']
    """
    return isinstance(leaf, NamedArray)


def is_jax_array_like(x: Any) -> bool:
    """True for anything with a ``shape`` and a ``dtype`` (jax and numpy arrays, ShapeDtypeStructs).

    >>> import jax.numpy as jnp
    >>> is_jax_array_like(jnp.zeros(2)), is_jax_array_like(2.0)
    (True, False)
    """
    return hasattr(x, "shape") and hasattr(x, "dtype")


def is_jax_or_hax_array_like(x: Any) -> bool:
    """True for an array-like (a ``shape`` and a ``dtype``) or a NamedArray.

    >>> import jax.numpy as jnp, namax as nx
    >>> is_jax_or_hax_array_like(jnp.zeros(2)), is_jax_or_hax_array_like(nx.zeros(nx.Axis("a", 2)))
    (True, True)
    >>> is_jax_or_hax_array_like([1, 2])
    False
    """
    return is_jax_array_like(x) or is_named_array(x)


class StringHolderEnum(type):
    """Metaclass for a class of string constants: the constants stay plain strings, and the
    class iterates over them (and supports ``in``).

    >>> class Mesh(metaclass=StringHolderEnum):
    ...     DATA = "data"
    ...     MODEL = "model"
    >>> Mesh.DATA, list(Mesh), "model" in Mesh, "batch" in Mesh
    ('data', ['data', 'model'], True, False)
    """

    def __new__(mcs, name: str, bases: tuple, members: dict):
        cls = super().__new__(mcs, name, bases, members)
        inherited = [m for b in bases for m in getattr(b, "members", ())]
        own = [v for k, v in members.items() if not k.startswith("_") and not callable(v)
               and not isinstance(v, (staticmethod, classmethod, property))]
        cls.members = tuple(inherited + [m for m in own if m not in inherited])
        return cls

    def __iter__(cls):
        return iter(cls.members)

    def __contains__(cls, item: Any) -> bool:
        return item in cls.members

    def __len__(cls) -> int:
        return len(cls.members)


def field(*, converter: Optional[Callable[[Any], Any]] = None, static: bool = False,
          axis_names: Optional[tuple[str, ...]] = None, **kwargs: Any) -> Any:
    """``equinox.field`` that can record the axis names of a plain-array field (``axis_names``).

    :func:`namax.partitioning.infer_resource_partitions` shards such a field by these names.
    A static field has no array, so it cannot have axis names.

    >>> import dataclasses, equinox as eqx, jax.numpy as jnp
    >>> class Params(eqx.Module):
    ...     w: jnp.ndarray = field(axis_names=("embed", "mlp"))
    >>> dataclasses.fields(Params)[0].metadata["axis_names"]
    ('embed', 'mlp')
    """
    if static and axis_names is not None:
        raise ValueError(f"field: a static field has no array to name; got static=True with axis_names={axis_names!r}")
    if axis_names is not None:
        names = ensure_tuple(axis_names)
        bad = [n for n in names if not isinstance(n, str)]
        if bad:
            raise TypeError(f"field: axis_names must be axis names (str), got {bad[0]!r} in {axis_names!r}")
        axis_names = names
    metadata = dict(kwargs.pop("metadata", None) or {})
    metadata["axis_names"] = axis_names
    if converter is not None:
        kwargs["converter"] = converter
    return eqx.field(static=static, metadata=metadata, **kwargs)


__all__ = ["ensure_tuple", "is_named_array", "is_jax_or_hax_array_like", "StringHolderEnum", "field"]
