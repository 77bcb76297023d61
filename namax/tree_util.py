"""``jax.tree_util`` with NamedArrays as leaves, plus tree-wide axis resizing.

``jax.tree_util`` sees a NamedArray as a node holding one array; these functions hand
the NamedArray itself to ``fn`` (and count it as one leaf), as Haliax's do.

>>> import jax.numpy as jnp, namax as nx
>>> tree = {"w": nx.ones(nx.Axis("embed", 2)), "b": jnp.zeros(3)}
>>> [type(x).__name__ for x in tree_leaves(tree)]
['ArrayImpl', 'NamedArray']
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import equinox as eqx
import jax

from .axis import AxisSelector, axis_name
from .named import NamedArray

IsLeaf = Optional[Callable[[Any], bool]]


def _with_named_leaves(is_leaf: IsLeaf) -> Callable[[Any], bool]:
    """``is_leaf`` that also stops at NamedArrays."""
    if is_leaf is None:
        return lambda x: isinstance(x, NamedArray)
    return lambda x: isinstance(x, NamedArray) or is_leaf(x)


def tree_map(fn: Callable, tree: Any, *rest: Any, is_leaf: IsLeaf = None) -> Any:
    """``jax.tree_util.tree_map`` where each NamedArray is one leaf.

    >>> import namax as nx
    >>> tree_map(lambda x: x.axes, {"w": nx.ones(nx.Axis("embed", 2))})
    {'w': (Axis('embed', 2),)}
    """
    return jax.tree_util.tree_map(fn, tree, *rest, is_leaf=_with_named_leaves(is_leaf))


def tree_flatten(tree: Any, is_leaf: IsLeaf = None) -> tuple[list, Any]:
    """``jax.tree_util.tree_flatten`` where each NamedArray is one leaf.

    >>> import namax as nx
    >>> leaves, treedef = tree_flatten([nx.ones(nx.Axis("embed", 2)), 1.0])
    >>> [type(x).__name__ for x in leaves], treedef.num_leaves
    (['NamedArray', 'float'], 2)
    """
    return jax.tree_util.tree_flatten(tree, is_leaf=_with_named_leaves(is_leaf))


def tree_unflatten(treedef: Any, leaves: Any) -> Any:
    """``jax.tree_util.tree_unflatten``: the inverse of :func:`tree_flatten`.

    >>> import namax as nx
    >>> leaves, treedef = tree_flatten({"w": nx.ones(nx.Axis("embed", 2))})
    >>> tree_unflatten(treedef, leaves)["w"].axes
    (Axis('embed', 2),)
    """
    return jax.tree_util.tree_unflatten(treedef, leaves)


def tree_leaves(tree: Any, is_leaf: IsLeaf = None) -> list:
    """``jax.tree_util.tree_leaves`` where each NamedArray is one leaf.

    >>> import namax as nx
    >>> len(tree_leaves((nx.ones(nx.Axis("embed", 2)), nx.zeros(nx.Axis("mlp", 3)))))
    2
    """
    return jax.tree_util.tree_leaves(tree, is_leaf=_with_named_leaves(is_leaf))


def tree_structure(tree: Any, is_leaf: IsLeaf = None) -> Any:
    """``jax.tree_util.tree_structure`` where each NamedArray is one leaf.

    >>> import namax as nx
    >>> tree_structure({"w": nx.ones(nx.Axis("embed", 2))})
    PyTreeDef({'w': *})
    """
    return jax.tree_util.tree_structure(tree, is_leaf=_with_named_leaves(is_leaf))


def _is_stacked(x: Any) -> bool:
    from .nn.scan import Stacked

    return isinstance(x, Stacked)


def scan_aware_tree_map(fn: Callable, tree: Any, *rest: Any, is_leaf: IsLeaf = None) -> Any:
    """:func:`tree_map` that maps ``fn`` over each layer of a :class:`namax.nn.Stacked`.

    Inside a Stacked, ``fn`` sees one layer's arrays (without the ``Layers`` axis), mapped
    over the layers with :func:`namax.vmap`; elsewhere it is :func:`tree_map`.

    >>> import namax as nx
    >>> Layers, Embed = nx.make_axes(layers=3, embed=2)
    >>> stack = nx.nn.Stacked.init(Layers, nx.nn.LayerNorm)(Embed)
    >>> seen = []
    >>> doubled = scan_aware_tree_map(lambda x: seen.append(x.axes) or x * 2, stack)
    >>> seen[0], doubled.stacked.weight.axes, doubled.stacked.weight.array.tolist()[0]
    ((Axis('embed', 2),), (Axis('layers', 3), Axis('embed', 2)), [2.0, 2.0])
    """
    def stops(x: Any) -> bool:
        return _is_stacked(x) or (is_leaf is not None and is_leaf(x))

    def each(x: Any, *others: Any) -> Any:
        if _is_stacked(x):
            from .hof import vmap

            def one_layer(layer: Any, *other_layers: Any) -> Any:
                return scan_aware_tree_map(fn, layer, *other_layers, is_leaf=is_leaf)

            mapped = vmap(one_layer, x.Layers)(x.stacked, *[o.stacked for o in others])
            return dataclasses.replace(x, stacked=mapped)
        return fn(x, *others)

    return tree_map(each, tree, *rest, is_leaf=stops)


def resize_axis(tree: Any, old_axis: AxisSelector, new_size: int, key: Optional[jax.Array] = None) -> Any:
    """Resize axis ``old_axis`` to ``new_size`` in every NamedArray of ``tree`` that has it.

    Shrinking keeps the first ``new_size`` entries. Growing appends entries: with ``key``,
    truncated-normal samples (within 2 standard deviations) scaled by the existing entries'
    standard deviation and shifted by their mean along the axis; without ``key``, that mean.
    Arrays without the axis and other leaves are unchanged. (A module that stores the
    Axis object itself must be updated separately.)

    >>> import jax.numpy as jnp, namax as nx
    >>> x = nx.named(jnp.array([1.0, 3.0]), "vocab")
    >>> resize_axis({"emb": x}, "vocab", 3)["emb"].array.tolist()
    [1.0, 3.0, 2.0]
    """
    from . import random as nxrandom
    from .ops import indexing, reductions, shape

    name = axis_name(old_axis)
    if not isinstance(name, str):
        raise TypeError(f"resize_axis: old_axis must be one Axis or name, got {old_axis!r}")
    if isinstance(new_size, bool) or not isinstance(new_size, int) or new_size < 0:
        raise ValueError(f"resize_axis: new_size must be an int >= 0, got {new_size!r}")

    def resize_one(x: Any, k: Optional[jax.Array]) -> Any:
        if not isinstance(x, NamedArray) or not x.has_axis(name):
            return x
        axis = x.resolve_axis(name)
        if new_size == axis.size:
            return x
        if new_size < axis.size:
            return indexing.slice(x, name, start=0, length=new_size)
        mean = reductions.mean(x, name)
        pad_axes = tuple(a.resize(new_size - a.size) if a.name == name else a for a in x.axes)
        if k is None:
            padding = shape.broadcast_to(mean, pad_axes)
        else:
            std = reductions.std(x, name)
            padding = nxrandom.truncated_normal(k, pad_axes, -2, 2, dtype=x.dtype) * std + mean
        return shape.concatenate(name, [x, padding.astype(x.dtype)])

    leaves, treedef = tree_flatten(tree)
    keys = [None] * len(leaves) if key is None else list(jax.random.split(key, max(len(leaves), 1)))
    return tree_unflatten(treedef, [resize_one(x, k) for x, k in zip(leaves, keys)])


def hashable_partition(pytree: Any, filter_spec: Any) -> tuple[Any, tuple[tuple, Any]]:
    """``equinox.partition`` whose static half is hashable: ``(dynamic, (static leaves, treedef))``.

    >>> import jax.numpy as jnp, equinox as eqx
    >>> dynamic, static = hashable_partition({"w": jnp.ones(2), "act": "relu"}, eqx.is_array)
    >>> hash(static) == hash(hashable_partition({"w": jnp.zeros(2), "act": "relu"}, eqx.is_array)[1])
    True
    >>> hashable_combine(dynamic, static)["act"]
    'relu'
    """
    dynamic, static = eqx.partition(pytree, filter_spec)
    leaves, treedef = jax.tree_util.tree_flatten(static)
    return dynamic, (tuple(leaves), treedef)


def hashable_combine(dynamic: Any, static: tuple[tuple, Any]) -> Any:
    """The inverse of :func:`hashable_partition`.

    >>> import jax.numpy as jnp, equinox as eqx
    >>> dynamic, static = hashable_partition([jnp.ones(2), 3], eqx.is_array)
    >>> hashable_combine(dynamic, static)[1]
    3
    """
    leaves, treedef = static
    return eqx.combine(dynamic, jax.tree_util.tree_unflatten(treedef, list(leaves)))


__all__ = ["tree_map", "tree_flatten", "tree_unflatten", "tree_leaves", "tree_structure", "scan_aware_tree_map",
           "resize_axis", "hashable_partition", "hashable_combine"]
