"""``Stacked``: ``Layers.size`` copies of one block, stored with a named ``Layers`` axis and
run with ``jax.lax.scan``.

Parameters are built by ``vmap`` of the block's ``init`` over split keys. A NamedArray's
axes are static pytree data, so after the vmap every NamedArray leaf's array has a new
leading dimension that its axes do not know about; :func:`_add_leading_axis` adds
``Layers`` to their axes. Inside the scan body each leaf is a slice without that dimension,
and :func:`_drop_leading_axis` removes ``Layers`` again.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, Optional, TypeVar

import equinox as eqx
import jax

from ..axis import Axis
from ..named import NamedArray, _axes_str, wrap

M = TypeVar("M", bound=eqx.Module)


def _is_named(x: Any) -> bool:
    return isinstance(x, NamedArray)


def _add_leading_axis(tree: Any, Layers: Axis) -> Any:
    """Put ``Layers`` in front of the axes of every NamedArray leaf (whose array already has the dim)."""

    def fix(x):
        if isinstance(x, NamedArray):
            return wrap(x.array, (Layers,) + x.axes)
        return x

    return jax.tree_util.tree_map(fix, tree, is_leaf=_is_named)


def _drop_leading_axis(tree: Any, Layers: Axis) -> Any:
    """Remove the leading ``Layers`` axis from every NamedArray leaf (whose array has lost it)."""

    def fix(x):
        if isinstance(x, NamedArray):
            return NamedArray(x.array, x.axes[1:])
        return x

    return jax.tree_util.tree_map(fix, tree, is_leaf=_is_named)


def _layers_in_front(tree: Any, Layers: Axis) -> Any:
    """Every NamedArray leaf with ``Layers`` moved to the front; a leaf without it is an error."""

    def fix(x):
        if not isinstance(x, NamedArray):
            return x
        if not x.has_axis(Layers.name):
            raise ValueError(f"Stacked: a parameter with axes {_axes_str(x.axes)} lacks the Layers axis {Layers.name!r}")
        x.axis_index(Layers)  # size check
        return x if x.axes[0].name == Layers.name else x.rearrange((Layers.name, ...))

    return jax.tree_util.tree_map(fix, tree, is_leaf=_is_named)


class Stacked(eqx.Module, Generic[M]):
    """A stack of identical blocks whose parameters share a leading ``Layers`` axis.

    ``Stacked.init(Layers, Block)(*args, key=k, **kwargs)`` calls ``Block.init(*args,
    key=layer_key, **kwargs)`` once per layer under ``vmap``; every NamedArray parameter gets
    the ``Layers`` axis in front. ``stacked(x, *args)`` folds ``x`` through the blocks in
    order with ``jax.lax.scan`` (``x = block(x, *args)``), under ``jax.checkpoint`` when
    ``gradient_checkpointing`` is set. A ``key=`` keyword is split into one key per layer.

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
    """

    stacked: M
    Layers: Axis = eqx.field(static=True)
    gradient_checkpointing: bool = eqx.field(static=True, default=False)

    @classmethod
    def init(cls, Layers: Axis, Block: Any, *, gradient_checkpointing: bool = False) -> Callable[..., "Stacked"]:
        """A constructor: call it with ``Block.init``'s arguments and ``key=``."""
        if not isinstance(Layers, Axis):
            raise TypeError(f"Stacked.init: Layers must be an Axis (with a size), got {Layers!r}")
        if Layers.size < 1:
            raise ValueError(f"Stacked.init: Layers {Layers} must have size >= 1")
        block_init = getattr(Block, "init", Block)

        def build(*args, key: jax.Array, **kwargs) -> "Stacked":
            keys = jax.random.split(key, Layers.size)
            make = eqx.filter_vmap(lambda k: block_init(*args, key=k, **kwargs), axis_name=Layers.name)
            blocks = _add_leading_axis(make(keys), Layers)
            return cls(blocks, Layers, gradient_checkpointing)

        return build

    def _scan(self, step: Callable, init: Any, key: Optional[jax.Array]) -> tuple[Any, Any]:
        blocks = _layers_in_front(self.stacked, self.Layers)
        dynamic, static = eqx.partition(blocks, eqx.is_array)
        keys = None if key is None else jax.random.split(key, self.Layers.size)

        def body(carry, xs):
            layer_params, layer_key = xs
            block = _drop_leading_axis(eqx.combine(layer_params, static), self.Layers)
            return step(block, carry, layer_key)

        if self.gradient_checkpointing:
            body = jax.checkpoint(body)
        return jax.lax.scan(body, init, (dynamic, keys))

    def fold(self, x: Any, *args, key: Optional[jax.Array] = None, **kwargs) -> Any:
        """``x`` through every block in order: ``x = block(x, *args, **kwargs)``."""

        def step(block, carry, layer_key):
            extra = {} if layer_key is None else {"key": layer_key}
            return block(carry, *args, **kwargs, **extra), None

        return self._scan(step, x, key)[0]

    __call__ = fold

    def scan(self, x: Any, *args, key: Optional[jax.Array] = None, **kwargs) -> tuple[Any, Any]:
        """Like :meth:`fold` for blocks returning ``(carry, output)``; the outputs are stacked.

        NamedArrays among the outputs get the ``Layers`` axis in front.
        """

        def step(block, carry, layer_key):
            extra = {} if layer_key is None else {"key": layer_key}
            return block(carry, *args, **kwargs, **extra)

        carry, outs = self._scan(step, x, key)
        return carry, _add_leading_axis(outs, self.Layers)

    def unstacked(self) -> tuple[M, ...]:
        """The blocks as a tuple of ordinary (unstacked) modules, one per layer."""
        blocks = _layers_in_front(self.stacked, self.Layers)
        dynamic, static = eqx.partition(blocks, eqx.is_array)
        out = []
        for i in range(self.Layers.size):
            layer = jax.tree_util.tree_map(lambda a: a[i], dynamic)
            out.append(_drop_leading_axis(eqx.combine(layer, static), self.Layers))
        return tuple(out)


__all__ = ["Stacked"]
