"""``MLP``: Linear layers with an activation between them, from ``In`` to ``Out`` via ``Hidden``."""

from __future__ import annotations

from typing import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

from ..axis import Axis, AxisSpec, ensure_tuple
from ..named import NamedArray
from .activations import relu
from .linear import Linear


class MLP(eqx.Module):
    """``depth`` hidden layers of width ``Hidden`` between ``In`` and ``Out``.

    ``depth=0`` is a single ``Linear(In -> Out)``. Otherwise the layers are
    ``In -> Hidden``, ``depth - 1`` times ``Hidden -> Hidden``, then ``Hidden -> Out``, with
    ``activation`` after every layer but the last. A ``Hidden -> Hidden`` layer's weight has
    ``Hidden`` and ``Hidden.alias(Hidden.name + "_out")`` (a weight cannot have one name
    twice); its output is renamed back to ``Hidden``.

    >>> import jax, namax as nx
    >>> Batch, Embed, Mlp = nx.make_axes(batch=2, embed=4, mlp=8)
    >>> mlp = MLP.init(Embed, Embed.alias("out"), Mlp, depth=2, key=jax.random.key(0))
    >>> mlp(nx.ones((Batch, Embed))).axes
    (Axis('batch', 2), Axis('out', 4))
    """

    layers: tuple[Linear, ...]
    Hidden: Axis = eqx.field(static=True)
    activation: Callable[[NamedArray], NamedArray] = eqx.field(static=True, default=relu)

    @staticmethod
    def init(
        In: AxisSpec,
        Out: AxisSpec,
        Hidden: Axis,
        *,
        depth: int = 1,
        activation: Callable[[NamedArray], NamedArray] = relu,
        key: jax.Array,
        use_bias: bool = True,
        use_final_bias: bool = True,
        init_scale: float = 1.0,
        dtype=jnp.float32,
    ) -> "MLP":
        """Build the layers, each from its own split of ``key``."""
        if not isinstance(depth, int) or depth < 0:
            raise ValueError(f"MLP.init: depth must be an int >= 0, got {depth!r}")
        if not isinstance(Hidden, Axis):
            raise TypeError(f"MLP.init: Hidden must be an Axis (with a size), got {Hidden!r}")
        HiddenOut = Hidden.alias(Hidden.name + "_out")
        shapes: Sequence[tuple[AxisSpec, AxisSpec]]
        if depth == 0:
            shapes = [(In, Out)]
        else:
            shapes = [(In, Hidden)] + [(Hidden, HiddenOut)] * (depth - 1) + [(Hidden, Out)]
        keys = jax.random.split(key, len(shapes))
        layers = tuple(
            Linear.init(i, o, key=k, use_bias=use_bias if n < len(shapes) - 1 else use_final_bias,
                        init_scale=init_scale, dtype=dtype)
            for n, ((i, o), k) in enumerate(zip(shapes, keys))
        )
        return MLP(layers, Hidden, activation)

    def __call__(self, x: NamedArray) -> NamedArray:
        hidden_out = self.Hidden.name + "_out"
        for layer in self.layers[:-1]:
            x = layer(x)
            if x.has_axis(hidden_out):
                x = x.rename({hidden_out: self.Hidden.name})
            x = self.activation(x)
        return self.layers[-1](x)


__all__ = ["MLP"]
