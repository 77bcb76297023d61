"""Helpers for pytrees and optimizers with implicit arrays (Qax's ``qax.utils``).

Tree functions that stop at implicit arrays (``tree_map_with_implicit``, ...), one-layer
flattening of nested implicit arrays (:func:`flatten_one_implicit_layer`,
:func:`implicit_depth`, :func:`get_common_prefix_transforms`), :func:`materialize_nested`,
and optimizer wrappers (:func:`freeze_keys`, :func:`freeze_subtrees`, :func:`apply_updates`).
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Callable, Iterable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import tree_util

from .implicit import ImplicitArray, _children, _fields, _split, is_implicit, materialize_one_layer
from .symbols import SymbolicConstant
from .use_implicit import use_implicit_args


def freeze_keys(optimizer: optax.GradientTransformation, cls: type, keys: Iterable[str]
                ) -> optax.GradientTransformation:
    """``optimizer`` with the fields ``keys`` of every ``cls`` instance frozen (zero updates).

    >>> import optax, jax.numpy as jnp
    >>> from namax.quant.lora import LoraWeight
    >>> opt = freeze_keys(optax.sgd(1.0), LoraWeight, ["w"])
    >>> p = LoraWeight(w=jnp.ones((2, 3)), a=jnp.ones((2, 1)), b=jnp.ones((3, 1)))
    >>> updates, _ = opt.update(jax.tree_util.tree_map(jnp.ones_like, p), opt.init(p), p)
    >>> float(abs(updates.w).max()), float(updates.a.max())  # w frozen, a trained
    (0.0, -1.0)
    """
    return freeze_subtrees(optimizer, _key_labeller(cls, keys))


def _key_labeller(cls: type, keys: Iterable[str]) -> Callable:
    keys = frozenset(keys)
    if not (isinstance(cls, type) and issubclass(cls, ImplicitArray)):
        raise TypeError(f"freeze_keys expects an ImplicitArray subclass, got {cls!r}")
    unknown = keys - set(_fields(cls)[0])
    if unknown:
        raise ValueError(f"{cls.__name__} has no array fields {sorted(unknown)}; fields: {list(_fields(cls)[0])}")

    def label(node: Any) -> Any:
        if isinstance(node, cls):
            children, rebuild = _split(node)
            names = _fields(type(node))[0]
            return rebuild([jax.tree_util.tree_map(lambda _: "freeze" if n in keys else "train", c,
                                                   is_leaf=lambda x: x is None)
                            for n, c in zip(names, children)])
        if isinstance(node, ImplicitArray):
            children, rebuild = _split(node)
            return rebuild([labels(c) for c in children])
        return "train"

    def labels(params: Any) -> Any:
        return jax.tree_util.tree_map(label, params, is_leaf=lambda x: isinstance(x, ImplicitArray))

    return labels


freeze_qax_keys = freeze_keys
"""Older Qax name of :func:`freeze_keys`."""


def freeze_subtrees(optimizer: optax.GradientTransformation, label_fn: Callable,
                    use_scalar_zeros: bool = False) -> optax.GradientTransformation:
    """``optimizer`` for the leaves ``label_fn(params)`` labels ``"train"``; those labelled
    ``"freeze"`` get zero updates (scalar zeros if ``use_scalar_zeros``). Gradients of dtype
    ``float0`` (integer leaves) count as zeros.

    >>> import optax, jax.numpy as jnp
    >>> opt = freeze_subtrees(optax.sgd(1.0), lambda p: {"a": "freeze", "b": "train"})
    >>> p = {"a": jnp.ones(2), "b": jnp.ones(2)}
    >>> u, _ = opt.update({"a": jnp.ones(2), "b": jnp.ones(2)}, opt.init(p), p)
    >>> u["a"].tolist(), u["b"].tolist()
    ([0.0, 0.0], [-1.0, -1.0])
    """
    inner = optax.multi_transform(
        {"train": optimizer, "freeze": set_to_zero_scalar() if use_scalar_zeros else optax.set_to_zero()}, label_fn)

    def update(grads: Any, state: Any, params: Any = None) -> Any:
        if params is not None:
            grads = jax.tree_util.tree_map(
                lambda p, g: (jnp.zeros((), p.dtype) if use_scalar_zeros else jnp.zeros_like(p))
                if getattr(g, "dtype", None) == jax.dtypes.float0 else g, params, grads)
        return inner.update(grads, state, params)

    return optax.GradientTransformation(inner.init, update)


def set_to_zero_scalar() -> optax.GradientTransformation:
    """A transformation whose updates are scalar zeros (cheap to fold into constants).

    >>> import jax.numpy as jnp
    >>> t = set_to_zero_scalar()
    >>> t.update({"w": jnp.ones((2, 2))}, t.init(None))[0]["w"].shape
    ()
    """
    def update(updates: Any, state: Any, params: Any = None) -> Any:
        return jax.tree_util.tree_map(lambda x: jnp.zeros((), x.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def apply_updates(params: Any, updates: Any) -> Any:
    """``optax.apply_updates`` where ``updates`` may hold :class:`SymbolicConstant` leaves.

    >>> import jax.numpy as jnp
    >>> from namax.quant.symbols import symbolic_zeros
    >>> apply_updates({"w": jnp.ones(2)}, {"w": symbolic_zeros((2,))})["w"].tolist()
    [1.0, 1.0]
    """
    flat, struct = jax.tree_util.tree_flatten(updates, is_leaf=lambda x: isinstance(x, SymbolicConstant))
    semi_flat = struct.flatten_up_to(params)
    return struct.unflatten(use_implicit_args(optax.apply_updates)(semi_flat, flat))


def vmap_all_but_one(f: Callable, axis: int, out_ndim: int = 0) -> Callable:
    """``f`` vmapped over every axis of its arguments except ``axis`` (all arguments mapped
    alike): ``f`` sees 1-D slices along ``axis``.

    >>> import jax.numpy as jnp
    >>> vmap_all_but_one(jnp.sum, 1)(jnp.ones((2, 3, 4))).shape
    (2, 4)
    """
    @functools.wraps(f)
    def inner(*args: Any) -> Any:
        n_dim = args[0].ndim
        if axis >= n_dim:
            raise ValueError(f"vmap_all_but_one: axis {axis} is out of bounds for an argument of {n_dim} dimensions")
        fn, in_dim, out_dim = f, 1, out_ndim
        for i in reversed(range(n_dim)):
            if i == axis:
                in_dim, out_dim = 0, 0
            else:
                fn = jax.vmap(fn, in_dim, out_dim)
        return fn(*args)

    return inner


# -- trees with implicit arrays ------------------------------------------------------------------

class _EmptyNodeCls:
    """A pytree node with no children (a placeholder), a singleton."""

    _instance: Optional["_EmptyNodeCls"] = None

    def __new__(cls) -> "_EmptyNodeCls":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "EmptyNode"


EmptyNode = _EmptyNodeCls()
"""A pytree node without children (Qax's ``EmptyNode``): ``tree_leaves(EmptyNode) == []``."""

tree_util.register_pytree_node(_EmptyNodeCls, lambda node: ((), None), lambda _, __: EmptyNode)


def leaf_predicate(x: Any) -> bool:
    """True for the values the ``*_with_implicit`` tree functions stop at.

    >>> from namax.quant.zeros import Zeros
    >>> leaf_predicate(Zeros(shape=(1,))), leaf_predicate(EmptyNode), leaf_predicate(1.0)
    (True, True, False)
    """
    return isinstance(x, (ImplicitArray, _EmptyNodeCls))


def combine_leaf_predicate(base_fn: Callable, is_leaf: Callable) -> Callable:
    """``base_fn`` (a ``jax.tree_util`` function) with ``is_leaf`` fixed; callers may add a
    further predicate with ``new_is_leaf=``.

    >>> leaves = combine_leaf_predicate(jax.tree_util.tree_leaves, lambda x: isinstance(x, tuple))
    >>> leaves([(1, 2), 3])
    [(1, 2), 3]
    """
    @functools.wraps(base_fn)
    def new_fn(*args: Any, new_is_leaf: Optional[Callable] = None) -> Any:
        combined = is_leaf if new_is_leaf is None else (lambda x: is_leaf(x) or new_is_leaf(x))
        return base_fn(*args, is_leaf=combined)

    return new_fn


tree_map_with_implicit = combine_leaf_predicate(jax.tree_util.tree_map, leaf_predicate)
tree_map_with_path_with_implicit = combine_leaf_predicate(tree_util.tree_map_with_path, leaf_predicate)
tree_flatten_with_implicit = combine_leaf_predicate(tree_util.tree_flatten, leaf_predicate)
tree_flatten_with_path_with_implicit = combine_leaf_predicate(tree_util.tree_flatten_with_path, leaf_predicate)
tree_leaves_with_implicit = combine_leaf_predicate(tree_util.tree_leaves, leaf_predicate)
tree_structure_with_implicit = combine_leaf_predicate(tree_util.tree_structure, leaf_predicate)


def flatten_one_implicit_layer(tree: Any) -> tuple[list, Any]:
    """``(leaves, treedef)`` of ``tree`` with each outermost implicit array opened one layer:
    its children are leaves, implicit ones unopened. ``tree_unflatten(treedef, leaves)``
    rebuilds ``tree``.

    >>> import jax.numpy as jnp
    >>> from namax.quant.lora import LoraWeight
    >>> from namax.quant.zeros import Zeros
    >>> w = LoraWeight(w=Zeros(shape=(2, 3)), a=jnp.ones((2, 1)), b=jnp.ones((3, 1)))
    >>> leaves, treedef = flatten_one_implicit_layer({"w": w})
    >>> [type(x).__name__ for x in leaves]
    ['Zeros', 'ArrayImpl', 'ArrayImpl']
    >>> jax.tree_util.tree_unflatten(treedef, leaves)["w"].w
    Zeros((2, 3), float32)
    """
    def below(node: Any, x: Any) -> bool:
        return is_implicit(x) and x is not node

    def prototype(node: Any) -> Any:
        return tree_util.tree_map(lambda _: 1, node, is_leaf=functools.partial(below, node))

    struct = tree_util.tree_structure(tree_map_with_implicit(prototype, tree))
    leaves = list(itertools.chain.from_iterable(
        tree_util.tree_leaves(leaf, is_leaf=functools.partial(below, leaf)) if is_implicit(leaf) else [leaf]
        for leaf in tree_leaves_with_implicit(tree)))
    return leaves, struct


flatten_one_layer = flatten_one_implicit_layer
"""Short name of :func:`flatten_one_implicit_layer`."""


def implicit_depth(tree: Any) -> int:
    """How deeply implicit arrays nest in ``tree`` (0: none; 1: implicit arrays of dense
    children; 2: an implicit child; ...).

    >>> import jax.numpy as jnp
    >>> from namax.quant.lora import LoraWeight
    >>> from namax.quant.zeros import Zeros
    >>> implicit_depth(jnp.ones(2)), implicit_depth(Zeros(shape=(2, 3)))
    (0, 1)
    >>> implicit_depth([LoraWeight(w=Zeros(shape=(2, 3)), a=jnp.ones((2, 1)), b=jnp.ones((3, 1)))])
    2
    """
    leaves, depth = tree_leaves_with_implicit(tree), 0
    while any(is_implicit(x) for x in leaves):
        depth += 1
        leaves = [y for x in leaves if is_implicit(x) for y in flatten_one_implicit_layer(x)[0]]
    return depth


count_depth = implicit_depth
"""Short name of :func:`implicit_depth`."""


def materialize_nested(implicit_arr: Any, full: bool = False) -> Any:
    """Materialize one layer of ``implicit_arr`` (its ``materialize`` run through its implicit
    children's handlers, so the result may still be implicit); with ``full=True``, repeat
    until the result is a dense array. Non-implicit values are returned as they are.

    >>> import jax.numpy as jnp
    >>> from namax.quant.lora import LoraWeight
    >>> from namax.quant.symbols import symbolic_zeros
    >>> w = LoraWeight(w=jnp.ones((2, 3)), a=symbolic_zeros((2, 1)), b=symbolic_zeros((3, 1)))
    >>> materialize_nested(w, full=True).tolist()
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    while is_implicit(implicit_arr):
        implicit_arr = materialize_one_layer(implicit_arr)
        if not full:
            break
    return implicit_arr


def _path_transform(materialize_paths: set) -> Callable:
    if not materialize_paths:
        return lambda tree: tree

    def walk(leaves: Sequence[Any], prefix: tuple) -> list:
        out = []
        for i, leaf in enumerate(leaves):
            path = prefix + (i,)
            if not is_implicit(leaf):
                out.append(leaf)
            elif path in materialize_paths:
                out.append(materialize_nested(leaf, full=True))
            else:
                sub, substruct = flatten_one_implicit_layer(leaf)
                out.append(tree_util.tree_unflatten(substruct, walk(sub, path)))
        return out

    def transform(tree: Any) -> Any:
        leaves, struct = tree_flatten_with_implicit(tree)
        return tree_util.tree_unflatten(struct, walk(leaves, ()))

    return transform


def _aval(x: Any) -> tuple:
    if is_implicit(x):
        return tuple(x.shape), jnp.dtype(x.dtype)
    return tuple(np.shape(x)), jnp.result_type(x)


def get_common_prefix_transforms(trees: Sequence[Any]) -> list[Callable]:
    """For pytrees that agree once their implicit arrays are materialized, one function per
    tree that materializes just enough of it for all trees to share one structure (the
    largest common prefix of their implicit nesting).

    >>> import jax.numpy as jnp
    >>> from namax.quant.zeros import Zeros
    >>> a, b = Zeros(shape=(2,)), jnp.ones(2)
    >>> [type(t(x)).__name__ for t, x in zip(get_common_prefix_transforms([a, b]), [a, b])]
    ['ArrayImpl', 'ArrayImpl']
    """
    trees = list(trees)
    if len(trees) <= 1:
        return [lambda x: x for _ in trees]
    flat = [tree_flatten_with_implicit(t) for t in trees]
    for i, (leaves, struct) in enumerate(flat[1:], 1):
        if struct != flat[0][1]:
            raise ValueError(f"get_common_prefix_transforms: tree {i} has structure {struct}, "
                             f"tree 0 has {flat[0][1]} (after materialization they must agree)")
        for a, b in zip(flat[0][0], leaves):
            if _aval(a) != _aval(b):
                raise ValueError(f"get_common_prefix_transforms: tree {i} has a leaf of (shape, dtype) {_aval(b)} "
                                 f"where tree 0 has {_aval(a)}")
    stack = [((i,), nodes) for i, nodes in enumerate(zip(*(leaves for leaves, _ in flat)))]
    paths: set = set()
    while stack:
        prefix, nodes = stack.pop()
        if not any(is_implicit(n) for n in nodes):
            continue
        opened = [flatten_one_implicit_layer(n) for n in nodes]
        if len({struct for _, struct in opened}) > 1 or any(
                len({_aval(x) for x in group}) > 1 for group in zip(*(leaves for leaves, _ in opened))):
            paths.add(prefix)
            continue
        stack.extend((prefix + (i,), group) for i, group in enumerate(zip(*(leaves for leaves, _ in opened))))
    return [_path_transform(paths) for _ in trees]


common_prefix_transforms = get_common_prefix_transforms
"""Short name of :func:`get_common_prefix_transforms`."""
