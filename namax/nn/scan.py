"""``Stacked`` and ``BlockSeq``: ``Layers.size`` copies of one block, run in order.

:class:`Stacked` stores the copies as one block whose parameters share a named ``Layers``
axis and runs them with :func:`namax.scan` (one compiled body); :class:`BlockSeq` keeps a
tuple of ordinary blocks and unrolls the loop in Python. Both have the same API (Haliax's):
``init(Layers, Block)(*args, key=...)``, ``fold``, ``scan``, ``vmap``, ``fold_via``,
``scan_via``, ``vmap_via``, ``get_layer``, ``unstacked``, and a ``gradient_checkpointing``
that is a bool, a shorthand string or a :class:`~namax.hof.ScanCheckpointPolicy`.

Extra arguments of ``fold``/``scan``/``vmap`` are given to every block; a NamedArray
among them that has the ``Layers`` axis is sliced, one slice per block. Plain arrays are
passed whole (never sliced by position). ``key=`` may be one key (split into one per
layer) or one key per layer (Haliax's ``jax.random.split(key, n)``).

>>> import jax, namax as nx
>>> from namax.nn import LayerNorm
>>> Layers, Embed = nx.Axis("layers", 3), nx.Axis("embed", 4)
>>> stack = Stacked.init(Layers, LayerNorm)(Embed)
>>> stack.stacked.weight.axes, stack(nx.ones(Embed)).axes
((Axis('layers', 3), Axis('embed', 4)), (Axis('embed', 4),))
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Generic, Optional, TypeVar, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import hof
from ..axis import Axis
from ..hof import ScanCheckpointPolicy, tree_checkpoint_name
from ..named import NamedArray, _axes_str
from ..ops.shape import stack as _stack

M = TypeVar("M", bound=eqx.Module)

CheckpointSpec = Union[ScanCheckpointPolicy, bool, str]


def _is_named(x: Any) -> bool:
    return isinstance(x, NamedArray)


def _policy(gradient_checkpointing: CheckpointSpec, prevent_cse: Optional[bool]) -> ScanCheckpointPolicy:
    policy = ScanCheckpointPolicy.from_bool_or_str(gradient_checkpointing)
    if prevent_cse is not None:
        policy = dataclasses.replace(policy, prevent_cse=prevent_cse)
    return policy


def _check_layers_axis(Layers: Any, what: str) -> Axis:
    if not isinstance(Layers, Axis):
        raise TypeError(f"{what}: Layers must be an Axis (with a size), got {Layers!r}")
    if Layers.size < 1:
        raise ValueError(f"{what}: Layers {Layers} must have size >= 1")
    return Layers


def _layer_keys(key: Optional[jax.Array], Layers: Axis, what: str) -> Optional[jax.Array]:
    """One key per layer: a single key is split, ``Layers.size`` keys (along dim 0) are kept."""
    if key is None:
        return None
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    one_key_ndim = 0 if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else 1  # typed key or raw uint32[2]
    if key.ndim == one_key_ndim:
        return jax.random.split(key, Layers.size)
    if key.ndim == one_key_ndim + 1 and key.shape[0] == Layers.size:
        return key
    raise ValueError(
        f"{what}: key= must be one PRNG key or {Layers.size} keys (one per {Layers.name!r} layer), "
        f"got an array of shape {key.shape}"
    )


def _with_key(kwargs: dict, key: Optional[jax.Array]) -> dict:
    return kwargs if key is None else {**kwargs, "key": key}


def _check_layer_index(index: Any, Layers: Axis, what: str) -> int:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"{what}: the layer index must be an int, got {index!r}")
    if not -Layers.size <= index < Layers.size:
        raise IndexError(f"{what}: index {index} is out of range for axis {Layers.name!r} of size {Layers.size}")
    return int(index) % Layers.size


def _slice_layer(tree: Any, Layers: Axis, i: int) -> Any:
    """Layer ``i``'s slice of every NamedArray with the ``Layers`` axis; other leaves whole."""

    def pick(leaf):
        if isinstance(leaf, NamedArray) and leaf.has_axis(Layers.name):
            leaf.axis_index(Layers)  # raises on a size mismatch, naming the axis
            return leaf[Layers.name, i]
        return leaf

    return jax.tree_util.tree_map(pick, tree, is_leaf=_is_named)


def _stack_outputs(outs: list, Layers: Axis) -> Any:
    def stack(*leaves):
        if isinstance(leaves[0], NamedArray):
            return _stack(Layers, leaves)
        return jnp.stack([jnp.asarray(v) for v in leaves])

    return jax.tree_util.tree_map(stack, *outs, is_leaf=_is_named)


def _normalize_unroll(unroll: Union[int, bool, None]) -> Union[int, bool]:
    if unroll is None:
        return 1
    if isinstance(unroll, bool):
        return unroll
    if int(unroll) < 1:
        raise ValueError(f"unroll must be >= 1, got {unroll}")
    return int(unroll)


class Stacked(eqx.Module, Generic[M]):
    """A stack of identical blocks whose parameters share a ``Layers`` axis, run with a scan.

    >>> import jax, namax as nx
    >>> from namax.nn import Linear
    >>> Layers, Embed = nx.Axis("layers", 3), nx.Axis("embed", 4)
    >>> class Block(eqx.Module):
    ...     lin: Linear
    ...     @staticmethod
    ...     def init(Embed, *, key):
    ...         return Block(Linear.init(Embed, Embed.alias("out"), key=key))
    ...     def __call__(self, x):
    ...         return self.lin(x).rename({"out": "embed"})
    >>> stack = Stacked.init(Layers, Block)(Embed, key=jax.random.key(0))
    >>> stack.stacked.lin.weight.axis_names
    ('layers', 'out', 'embed')
    >>> stack(nx.ones(Embed)).axes
    (Axis('embed', 4),)

    ``Stacked.init(Layers, Block)(*args, key=k, **kwargs)`` builds ``Block.init(*args,
    key=layer_key, **kwargs)`` once per layer under :func:`namax.vmap`: every NamedArray
    parameter gets ``Layers`` in front, every plain array a leading dimension. ``stack(x,
    *args)`` (:meth:`fold`) runs ``x = block(x, *args)`` through the layers in order with
    :func:`namax.fold`, checkpointed as ``gradient_checkpointing`` says (see
    :class:`~namax.hof.ScanCheckpointPolicy`; ``True`` is plain ``jax.checkpoint``).
    """

    stacked: M
    Layers: Axis = eqx.field(static=True)
    gradient_checkpointing: ScanCheckpointPolicy = eqx.field(
        static=True, default=False, converter=ScanCheckpointPolicy.from_bool_or_str)

    @property
    def Block(self) -> Axis:
        """The stacked axis (Haliax's name for ``Layers``).

        >>> import namax as nx
        >>> from namax.nn import LayerNorm
        >>> Stacked.init(nx.Axis("layers", 2), LayerNorm)(nx.Axis("embed", 3)).Block
        Axis('layers', 2)
        """
        return self.Layers

    @classmethod
    def init(cls, Block: Axis, module: Any, *, gradient_checkpointing: CheckpointSpec = False,
             prevent_cse: Optional[bool] = None) -> Callable[..., "Stacked"]:
        """A constructor: call it with ``module.init``'s arguments (and ``key=``).

        >>> import namax as nx
        >>> from namax.nn import LayerNorm
        >>> Layers, Embed = nx.Axis("layers", 2), nx.Axis("embed", 3)
        >>> Stacked.init(Layers, LayerNorm, gradient_checkpointing=True)(Embed).stacked.bias.axes
        (Axis('layers', 2), Axis('embed', 3))

        ``Block`` is the stacked axis (``Layers``) and ``module`` the block class (its
        ``init``, or the class itself, is called). NamedArray arguments with the ``Layers``
        axis are sliced, one slice per layer; everything else is given whole to each layer.
        """
        Layers = _check_layers_axis(Block, "Stacked.init")
        policy = _policy(gradient_checkpointing, prevent_cse)
        block_init = getattr(module, "init", module)

        def build(*args, key: Optional[jax.Array] = None, **kwargs) -> "Stacked":
            keys = _layer_keys(key, Layers, "Stacked.init")

            def one_layer(layer_key, *a, **k):
                return block_init(*a, **_with_key(k, layer_key))

            blocks = hof.vmap(one_layer, Layers, default=None, args=(0,))(keys, *args, **kwargs)
            return cls(blocks, Layers, policy)

        return build

    def _check_parameters(self) -> None:
        for leaf in jax.tree_util.tree_leaves(self.stacked, is_leaf=_is_named):
            if isinstance(leaf, NamedArray):
                if not leaf.has_axis(self.Layers.name):
                    raise ValueError(
                        f"Stacked: a parameter with axes {_axes_str(leaf.axes)} lacks the Layers axis "
                        f"{self.Layers.name!r}"
                    )
                leaf.axis_index(self.Layers)  # size check

    def _scan(self, step: Callable, init: Any, args: tuple, kwargs: dict, key: Optional[jax.Array],
              unroll: Union[int, bool, None]) -> tuple[Any, Any]:
        """``step(block, carry, *args, **kwargs) -> (carry, out)`` scanned over the layers."""
        self._check_parameters()
        keys = _layer_keys(key, self.Layers, "Stacked")
        # NamedArrays go through the scan (sliced if they have Layers); the rest is closed over whole
        named_xs, rest = eqx.partition((args, kwargs), _is_named, is_leaf=_is_named)

        def body(carry, blocks, xs, layer_key):
            a, k = eqx.combine(xs, rest, is_leaf=_is_named)
            return step(blocks, carry, *a, **_with_key(k, layer_key))

        run = hof.scan(body, self.Layers, remat=self.gradient_checkpointing, unroll=_normalize_unroll(unroll))
        return run(init, self.stacked, named_xs, keys)

    def fold(self, init: Any, *args, unroll: Union[int, bool, None] = None, key: Optional[jax.Array] = None,
             **kwargs) -> Any:
        """``init`` through every block in order: ``x = block(x, *args, **kwargs)``.

        >>> import namax as nx
        >>> from namax.nn import LayerNorm
        >>> Layers, Embed = nx.Axis("layers", 2), nx.Axis("embed", 3)
        >>> stack = Stacked.init(Layers, LayerNorm)(Embed)
        >>> stack.fold(nx.arange(Embed).astype(float)).axes
        (Axis('embed', 3),)
        """
        return self._scan(lambda block, carry, *a, **k: (block(carry, *a, **k), None),
                          init, args, kwargs, key, unroll)[0]

    __call__ = fold

    def scan(self, init: Any, *args, unroll: Union[int, bool, None] = None, key: Optional[jax.Array] = None,
             **kwargs) -> tuple[Any, Any]:
        """Like :meth:`fold` for blocks returning ``(carry, output)``; the outputs are stacked.

        >>> import namax as nx
        >>> from namax.nn import LayerNorm
        >>> Layers, Embed = nx.Axis("layers", 2), nx.Axis("embed", 3)
        >>> class Step(eqx.Module):
        ...     norm: LayerNorm
        ...     def __call__(self, x):
        ...         return self.norm(x), nx.sum(x)
        >>> stack = Stacked.init(Layers, lambda E: Step(LayerNorm.init(E)))(Embed)
        >>> carry, sums = stack.scan(nx.arange(Embed).astype(float))
        >>> carry.axes, sums.axes
        ((Axis('embed', 3),), (Axis('layers', 2),))

        NamedArrays among the outputs get ``Layers`` in front; plain arrays a leading dimension.
        """
        return self._scan(lambda block, carry, *a, **k: block(carry, *a, **k), init, args, kwargs, key, unroll)

    def fold_via(self, fn: Callable, *, unroll: Union[int, bool, None] = None) -> Callable:
        """A function folding ``carry = fn(block, carry, *args, **kwargs)`` over the layers.

        >>> import namax as nx
        >>> from namax.nn import LayerNorm
        >>> Layers, Embed = nx.Axis("layers", 2), nx.Axis("embed", 3)
        >>> stack = Stacked.init(Layers, LayerNorm)(Embed)
        >>> stack.fold_via(lambda block, x: x + block.weight)(nx.zeros(Embed)).array.tolist()
        [2.0, 2.0, 2.0]
        """

        def folded(init, *args, **kwargs):
            return self._scan(lambda block, carry, *a, **k: (fn(block, carry, *a, **k), None),
                              init, args, kwargs, None, unroll)[0]

        return folded

    def scan_via(self, fn: Callable, *, unroll: Union[int, bool, None] = None) -> Callable:
        """A function scanning ``carry, out = fn(block, carry, *args, **kwargs)`` over the layers.

        >>> import namax as nx
        >>> from namax.nn import LayerNorm
        >>> Layers, Embed = nx.Axis("layers", 2), nx.Axis("embed", 3)
        >>> stack = Stacked.init(Layers, LayerNorm)(Embed)
        >>> _, outs = stack.scan_via(lambda block, x: (x, block.weight))(nx.zeros(Embed))
        >>> outs.axes
        (Axis('layers', 2), Axis('embed', 3))
        """

        def scanned(init, *args, **kwargs):
            return self._scan(lambda block, carry, *a, **k: fn(block, carry, *a, **k),
                              init, args, kwargs, None, unroll)

        return scanned

    def vmap_via(self, fn: Callable) -> Callable:
        """A function applying ``fn(block, *args, **kwargs)`` to every layer independently, stacked.

        >>> import namax as nx
        >>> from namax.nn import LayerNorm
        >>> Layers, Embed = nx.Axis("layers", 2), nx.Axis("embed", 3)
        >>> stack = Stacked.init(Layers, LayerNorm)(Embed)
        >>> stack.vmap_via(lambda block, x: block(x))(nx.arange(Embed).astype(float)).axes
        (Axis('layers', 2), Axis('embed', 3))
        """

        def mapped(*args, **kwargs):
            self._check_parameters()
            return hof.vmap(fn, self.Layers, default=None, args=(0,))(self.stacked, *args, **kwargs)

        return mapped

    def vmap(self, *args, key: Optional[jax.Array] = None, **kwargs) -> Any:
        """Every block applied to the same input, independently; the outputs stacked along ``Layers``.

        >>> import namax as nx
        >>> from namax.nn import LayerNorm
        >>> Layers, Embed = nx.Axis("layers", 2), nx.Axis("embed", 3)
        >>> stack = Stacked.init(Layers, LayerNorm)(Embed)
        >>> stack.vmap(nx.arange(Embed).astype(float)).axes
        (Axis('layers', 2), Axis('embed', 3))

        Runs with :func:`namax.vmap` over ``Layers``: a NamedArray argument with the ``Layers``
        axis gives each block its own slice. ``key=`` is split into one key per layer.
        """
        self._check_parameters()
        keys = _layer_keys(key, self.Layers, "Stacked.vmap")

        def call(block, layer_key, *a, **k):
            return block(*a, **_with_key(k, layer_key))

        return hof.vmap(call, self.Layers, default=None, args=(0, 0))(self.stacked, keys, *args, **kwargs)

    def get_layer(self, index: int) -> M:
        """Layer ``index`` as an ordinary block (its parameters without the ``Layers`` axis).

        >>> import namax as nx
        >>> from namax.nn import LayerNorm
        >>> Layers, Embed = nx.Axis("layers", 2), nx.Axis("embed", 3)
        >>> Stacked.init(Layers, LayerNorm)(Embed).get_layer(-1).weight.axes
        (Axis('embed', 3),)
        """
        i = _check_layer_index(index, self.Layers, "Stacked.get_layer")
        n = self.Layers.size

        def pick(leaf):
            if isinstance(leaf, NamedArray):
                return leaf[self.Layers.name, i] if leaf.has_axis(self.Layers.name) else leaf
            if hasattr(leaf, "shape") and hasattr(leaf, "dtype") and len(leaf.shape) >= 1 and leaf.shape[0] == n:
                return leaf[i]
            return leaf

        return jax.tree_util.tree_map(pick, self.stacked, is_leaf=_is_named)

    def unstacked(self) -> tuple[M, ...]:
        """The blocks as a tuple of ordinary (unstacked) modules, one per layer.

        >>> import namax as nx
        >>> from namax.nn import LayerNorm
        >>> Layers, Embed = nx.Axis("layers", 2), nx.Axis("embed", 3)
        >>> [b.weight.axes for b in Stacked.init(Layers, LayerNorm)(Embed).unstacked()]
        [(Axis('embed', 3),), (Axis('embed', 3),)]
        """
        return tuple(self.get_layer(i) for i in range(self.Layers.size))


class BlockSeq(eqx.Module, Generic[M]):
    """The API of :class:`Stacked` over a tuple of separate blocks, unrolled in Python.

    >>> import namax as nx
    >>> from namax.nn import LayerNorm
    >>> Layers, Embed = nx.Axis("layers", 3), nx.Axis("embed", 4)
    >>> seq = BlockSeq.init(Layers, LayerNorm)(Embed)
    >>> len(seq.blocks), seq.blocks[0].weight.axes, seq(nx.ones(Embed)).axes
    (3, (Axis('embed', 4),), (Axis('embed', 4),))

    Each block may differ (a BlockSeq built from a list need not be homogeneous). Each
    block call is checkpointed as ``gradient_checkpointing`` says (``nested`` does not
    apply: there is no scan to split).
    """

    blocks: tuple
    Layers: Axis = eqx.field(static=True)
    gradient_checkpointing: ScanCheckpointPolicy = eqx.field(
        static=True, default=False, converter=ScanCheckpointPolicy.from_bool_or_str)

    def __check_init__(self) -> None:
        _check_layers_axis(self.Layers, "BlockSeq")
        if len(self.blocks) != self.Layers.size:
            raise ValueError(
                f"BlockSeq: {len(self.blocks)} blocks given for axis {self.Layers.name!r} of size {self.Layers.size}"
            )

    @property
    def Block(self) -> Axis:
        """The layer axis (Haliax's name for ``Layers``).

        >>> import namax as nx
        >>> from namax.nn import LayerNorm
        >>> BlockSeq.init(nx.Axis("layers", 2), LayerNorm)(nx.Axis("embed", 3)).Block
        Axis('layers', 2)
        """
        return self.Layers

    @classmethod
    def init(cls, Block: Axis, module: Any, *, gradient_checkpointing: CheckpointSpec = False,
             prevent_cse: Optional[bool] = None) -> Callable[..., "BlockSeq"]:
        """A constructor: call it with ``module.init``'s arguments (and ``key=``); one call per layer.

        >>> import jax, namax as nx
        >>> from namax.nn import Linear
        >>> Layers, In, Out = nx.Axis("layers", 2), nx.Axis("embed", 3), nx.Axis("out", 3)
        >>> seq = BlockSeq.init(Layers, Linear)(In, Out, key=jax.random.key(0))
        >>> bool((seq.blocks[0].weight.array != seq.blocks[1].weight.array).any())
        True

        Same arguments as :meth:`Stacked.init`: a single ``key`` is split into one per layer
        (the same keys :meth:`Stacked.init` uses, so both build the same parameters).
        """
        Layers = _check_layers_axis(Block, "BlockSeq.init")
        policy = _policy(gradient_checkpointing, prevent_cse)
        block_init = getattr(module, "init", module)

        def build(*args, key: Optional[jax.Array] = None, **kwargs) -> "BlockSeq":
            keys = _layer_keys(key, Layers, "BlockSeq.init")
            blocks = []
            for i in range(Layers.size):
                a, k = _slice_layer((args, kwargs), Layers, i)
                blocks.append(block_init(*a, **_with_key(k, None if keys is None else keys[i])))
            return cls(tuple(blocks), Layers, policy)

        return build

    def _names(self) -> tuple[str, str]:
        kind = type(self.blocks[0]).__name__ if self.blocks else "block"
        return f"BlockSeq({self.Layers.name}, {kind})__carry", f"BlockSeq({self.Layers.name}, {kind})__input"

    def _run(self, step: Callable, init: Any, args: tuple, kwargs: dict, key: Optional[jax.Array]) -> tuple[Any, list]:
        keys = _layer_keys(key, self.Layers, "BlockSeq")
        carry_name, input_name = self._names()

        def one_block(block, carry, a, k):
            return step(block, tree_checkpoint_name(carry, carry_name), *a, **k)

        checkpointed = self.gradient_checkpointing.checkpoint(carry_name, input_name, one_block)
        carry, outs = init, []
        for i, block in enumerate(self.blocks):
            a, k = _slice_layer((args, kwargs), self.Layers, i)
            carry, out = checkpointed(block, carry, a, _with_key(k, None if keys is None else keys[i]))
            outs.append(out)
        return carry, outs

    def fold(self, init: Any, *args, unroll: Union[int, bool, None] = None, key: Optional[jax.Array] = None,
             **kwargs) -> Any:
        """``init`` through every block in order: ``x = block(x, *args, **kwargs)``.

        >>> import namax as nx
        >>> from namax.nn import LayerNorm
        >>> seq = BlockSeq.init(nx.Axis("layers", 2), LayerNorm)(nx.Axis("embed", 3))
        >>> seq.fold(nx.arange(nx.Axis("embed", 3)).astype(float)).axes
        (Axis('embed', 3),)

        ``unroll`` is accepted for API parity with :meth:`Stacked.fold` (the loop is unrolled).
        """
        _normalize_unroll(unroll)
        return self._run(lambda block, carry, *a, **k: (block(carry, *a, **k), None), init, args, kwargs, key)[0]

    __call__ = fold

    def scan(self, init: Any, *args, unroll: Union[int, bool, None] = None, key: Optional[jax.Array] = None,
             **kwargs) -> tuple[Any, Any]:
        """Like :meth:`fold` for blocks returning ``(carry, output)``; outputs stacked along ``Layers``.

        >>> import namax as nx
        >>> from namax.nn import LayerNorm
        >>> class Step(eqx.Module):
        ...     norm: LayerNorm
        ...     def __call__(self, x):
        ...         return self.norm(x), nx.sum(x)
        >>> seq = BlockSeq.init(nx.Axis("layers", 2), lambda E: Step(LayerNorm.init(E)))(nx.Axis("embed", 3))
        >>> _, sums = seq.scan(nx.ones(nx.Axis("embed", 3)))
        >>> sums.axes
        (Axis('layers', 2),)
        """
        _normalize_unroll(unroll)
        carry, outs = self._run(lambda block, c, *a, **k: block(c, *a, **k), init, args, kwargs, key)
        return carry, _stack_outputs(outs, self.Layers)

    def fold_via(self, fn: Callable, *, unroll: Union[int, bool, None] = None) -> Callable:
        """A function folding ``carry = fn(block, carry, *args, **kwargs)`` over the blocks.

        >>> import namax as nx
        >>> from namax.nn import LayerNorm
        >>> seq = BlockSeq.init(nx.Axis("layers", 2), LayerNorm)(nx.Axis("embed", 3))
        >>> seq.fold_via(lambda block, x: x + block.weight)(nx.zeros(nx.Axis("embed", 3))).array.tolist()
        [2.0, 2.0, 2.0]
        """

        def folded(init, *args, **kwargs):
            return self._run(lambda block, c, *a, **k: (fn(block, c, *a, **k), None), init, args, kwargs, None)[0]

        return folded

    def scan_via(self, fn: Callable, *, unroll: Union[int, bool, None] = None) -> Callable:
        """A function scanning ``carry, out = fn(block, carry, *args, **kwargs)`` over the blocks.

        >>> import namax as nx
        >>> from namax.nn import LayerNorm
        >>> seq = BlockSeq.init(nx.Axis("layers", 2), LayerNorm)(nx.Axis("embed", 3))
        >>> _, outs = seq.scan_via(lambda block, x: (x, block.weight))(nx.zeros(nx.Axis("embed", 3)))
        >>> outs.axes
        (Axis('layers', 2), Axis('embed', 3))
        """

        def scanned(init, *args, **kwargs):
            carry, outs = self._run(lambda block, c, *a, **k: fn(block, c, *a, **k), init, args, kwargs, None)
            return carry, _stack_outputs(outs, self.Layers)

        return scanned

    def vmap_via(self, fn: Callable) -> Callable:
        """A function applying ``fn(block, *args, **kwargs)`` to every block independently, stacked.

        >>> import namax as nx
        >>> from namax.nn import LayerNorm
        >>> seq = BlockSeq.init(nx.Axis("layers", 2), LayerNorm)(nx.Axis("embed", 3))
        >>> seq.vmap_via(lambda block, x: block(x))(nx.ones(nx.Axis("embed", 3))).axes
        (Axis('layers', 2), Axis('embed', 3))
        """

        def mapped(*args, **kwargs):
            outs = []
            for i, block in enumerate(self.blocks):
                a, k = _slice_layer((args, kwargs), self.Layers, i)
                outs.append(fn(block, *a, **k))
            return _stack_outputs(outs, self.Layers)

        return mapped

    def vmap(self, *args, key: Optional[jax.Array] = None, **kwargs) -> Any:
        """Every block applied to the same input; the outputs stacked along ``Layers``.

        >>> import namax as nx
        >>> from namax.nn import LayerNorm
        >>> seq = BlockSeq.init(nx.Axis("layers", 2), LayerNorm)(nx.Axis("embed", 3))
        >>> seq.vmap(nx.arange(nx.Axis("embed", 3)).astype(float)).axes
        (Axis('layers', 2), Axis('embed', 3))
        """
        keys = _layer_keys(key, self.Layers, "BlockSeq.vmap")
        outs = []
        for i, block in enumerate(self.blocks):
            a, k = _slice_layer((args, kwargs), self.Layers, i)
            outs.append(block(*a, **_with_key(k, None if keys is None else keys[i])))
        return _stack_outputs(outs, self.Layers)

    def get_layer(self, index: int) -> M:
        """Block ``index``.

        >>> import namax as nx
        >>> from namax.nn import LayerNorm
        >>> BlockSeq.init(nx.Axis("layers", 2), LayerNorm)(nx.Axis("embed", 3)).get_layer(1).weight.axes
        (Axis('embed', 3),)
        """
        return self.blocks[_check_layer_index(index, self.Layers, "BlockSeq.get_layer")]

    def unstacked(self) -> tuple[M, ...]:
        """The blocks, as a tuple.

        >>> import namax as nx
        >>> from namax.nn import LayerNorm
        >>> len(BlockSeq.init(nx.Axis("layers", 2), LayerNorm)(nx.Axis("embed", 3)).unstacked())
        2
        """
        return tuple(self.blocks)


__all__ = ["Stacked", "BlockSeq", "ScanCheckpointPolicy"]
