"""``Embedding``: a lookup table from a ``Vocab`` axis to ``Embed`` axes, with tied unembedding."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .. import random as nxrandom
from ..axis import Axis, AxisSpec, ensure_tuple
from ..layout import embedding_axes
from ..named import NamedArray, _axes_str
from ..ops.dot import dot
from ..ops.indexing import take


class Embedding(eqx.Module):
    """A ``[Vocab, Embed]`` table; ``emb(ids)`` looks up each integer id.

    The table is stored in the order ``namax.layout`` picks for the default backend
    (``(Vocab, *Embed)`` on CPU: each lookup reads contiguous rows); lookups and
    ``unembed`` work by name, so the stored order never changes a result.

    ``Embed`` may be an Axis or a tuple of Axes. ``emb(ids)`` has ``ids``'s axes followed by
    ``Embed``; ``emb.unembed(x)`` contracts ``Embed`` with the same table to give logits
    over ``Vocab`` (weight tying).

    >>> import jax, jax.numpy as jnp, namax as nx
    >>> Vocab, Embed, Pos = nx.make_axes(vocab=10, embed=4, position=3)
    >>> emb = Embedding.init(Vocab, Embed, key=jax.random.key(0))
    >>> emb(nx.named(jnp.array([1, 5, 2]), Pos)).axes
    (Axis('position', 3), Axis('embed', 4))
    """

    weight: NamedArray
    Vocab: Axis = eqx.field(static=True)
    Embed: AxisSpec = eqx.field(static=True)

    @staticmethod
    def init(Vocab: Axis, Embed: AxisSpec, *, key: jax.Array, init_scale: float = 1.0,
             dtype: Any = jnp.float32) -> "Embedding":
        """A table of normal samples times ``init_scale``, axes ``(Vocab, *Embed)`` in the backend's order."""
        embed = ensure_tuple(Embed)
        for a in (Vocab, *embed):
            if not isinstance(a, Axis):
                raise TypeError(f"Embedding.init: Vocab and Embed must be Axes (with sizes), got {a!r}")
        if Vocab.name in {a.name for a in embed}:
            raise ValueError(f"Embedding.init: Vocab {Vocab} and Embed {_axes_str(embed)} share a name")
        weight = nxrandom.normal(key, embedding_axes(Vocab, embed), dtype=dtype) * init_scale
        return Embedding(weight, Vocab, Embed)

    def __call__(self, ids: NamedArray) -> NamedArray:
        """The rows of the table for the integer ``ids`` (any axes)."""
        if not isinstance(ids, NamedArray):
            raise TypeError(f"Embedding: ids must be an integer NamedArray, got {type(ids).__name__}")
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise TypeError(f"Embedding: ids must be integers, got dtype {ids.dtype} (axes {_axes_str(ids.axes)})")
        if ids.has_axis(self.Vocab.name):
            raise ValueError(f"Embedding: ids with axes {_axes_str(ids.axes)} already have the Vocab axis "
                             f"{self.Vocab.name!r}; pass integer ids, not one-hot vectors")
        return take(self.weight, self.Vocab, ids)

    def unembed(self, x: NamedArray) -> NamedArray:
        """Logits over ``Vocab``: ``x`` contracted with the table over the ``Embed`` axes."""
        return dot(x, self.weight, axis=ensure_tuple(self.Embed))


__all__ = ["Embedding"]
