"""``Embedding``: a lookup table from a ``Vocab`` axis to ``Embed`` axes, with tied unembedding."""

from __future__ import annotations

from typing import Any, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import random as nxrandom
from ..axis import Axis, AxisSpec, ensure_tuple
from ..layout import embedding_axes
from ..named import NamedArray, _axes_str
from ..ops.dot import dot
from ..ops.indexing import take
from .mup import AbstractEmbeddingReparam, EmbeddingStandardParam, ReparamEnabled


class Embedding(eqx.Module, ReparamEnabled):
    """A ``[Vocab, Embed]`` table; ``emb(ids)`` looks up each integer id.

    The table is stored in the order ``namax.layout`` picks for the default backend
    (``(Vocab, *Embed)`` on CPU: each lookup reads contiguous rows); lookups and
    ``unembed`` work by name, so the stored order never changes a result.

    ``Embed`` may be an Axis or a tuple of Axes. ``emb(ids)`` has ``ids``'s axes followed by
    ``Embed``; ``emb.unembed(x)`` contracts ``Embed`` with the same table to give logits
    over ``Vocab`` (weight tying).

    Ids must lie in ``[0, Vocab.size)``. An out-of-range id raises an ``IndexError`` when the
    ids are concrete; under ``jit`` (where they cannot be checked) its row is NaN, never
    another token's row. ``emb(ids, mode=...)`` changes that: ``"fill"`` (rows of
    ``fill_value``, no error), ``"clip"`` (the nearest row) or ``"promise_in_bounds"``.

    >>> import jax, jax.numpy as jnp, namax as nx
    >>> Vocab, Embed, Pos = nx.make_axes(vocab=10, embed=4, position=3)
    >>> emb = Embedding.init(Vocab, Embed, key=jax.random.key(0))
    >>> emb(nx.named(jnp.array([1, 5, 2]), Pos)).axes
    (Axis('position', 3), Axis('embed', 4))
    >>> rows = jax.jit(lambda emb, ids: emb(ids))(emb, nx.named(jnp.array([1, 12, 2]), Pos))
    >>> bool(jnp.isnan(rows["position", 1].array).all()), bool(jnp.isnan(rows["position", 0].array).any())
    (True, False)
    """

    weight: NamedArray
    Vocab: Axis = eqx.field(static=True)
    Embed: AxisSpec = eqx.field(static=True)
    _reparam_cls: Optional[type] = eqx.field(static=True, default=None)

    @property
    def reparam(self) -> AbstractEmbeddingReparam:
        """The table's parameterisation bound to ``Embed`` and ``Vocab`` (``EmbeddingStandardParam``
        when ``Embedding.init`` had no ``reparam_cls``).

        >>> import jax, namax as nx
        >>> Vocab, Embed = nx.make_axes(vocab=10, embed=4)
        >>> type(Embedding.init(Vocab, Embed, key=jax.random.key(0)).reparam).__name__
        'EmbeddingStandardParam'
        """
        return (self._reparam_cls or EmbeddingStandardParam)(self.Embed, self.Vocab)

    @staticmethod
    def init(Vocab: Axis, Embed: AxisSpec, *, key: jax.Array, init_scale: float = 1.0,
             dtype: Any = jnp.float32, reparam_cls: Optional[type] = None) -> "Embedding":
        """A table of normal samples times ``init_scale``, axes ``(Vocab, *Embed)`` in the backend's order.

        ``reparam_cls`` (a :mod:`namax.nn.mup` ``AbstractEmbeddingReparam`` subclass) also
        multiplies the samples by its ``init_scale(Vocab, Embed)`` (``EmbeddingStandardParam``:
        ``1/|Embed|``, Haliax's default; ``EmbeddingMup``: 1), and its ``active_scale`` and
        ``unembed_active_scale`` multiply the looked-up rows and the unembedding logits. The
        default ``None`` keeps namax's unit-normal init and applies no scaling.

        >>> import jax, namax as nx
        >>> from namax.nn.mup import EmbeddingMup
        >>> Vocab, Embed = nx.make_axes(vocab=10, embed=4)
        >>> emb = Embedding.init(Vocab, Embed, key=jax.random.key(0), reparam_cls=EmbeddingMup)
        >>> emb.reparam.unembed_active_scale
        0.25
        """
        if reparam_cls is not None and not (isinstance(reparam_cls, type)
                                            and issubclass(reparam_cls, AbstractEmbeddingReparam)):
            raise TypeError(f"Embedding.init: reparam_cls must be None or an AbstractEmbeddingReparam subclass "
                            f"(e.g. namax.nn.mup.EmbeddingMup), got {reparam_cls!r}")
        embed = ensure_tuple(Embed)
        for a in (Vocab, *embed):
            if not isinstance(a, Axis):
                raise TypeError(f"Embedding.init: Vocab and Embed must be Axes (with sizes), got {a!r}")
        if Vocab.name in {a.name for a in embed}:
            raise ValueError(f"Embedding.init: Vocab {Vocab} and Embed {_axes_str(embed)} share a name")
        weight = nxrandom.normal(key, embedding_axes(Vocab, embed), dtype=dtype) * init_scale
        if reparam_cls is not None:
            weight = weight * reparam_cls.init_scale(Vocab, Embed)
        return Embedding(weight, Vocab, Embed, reparam_cls)

    def __call__(self, ids: NamedArray, *, mode: Optional[str] = None, fill_value: Any = None) -> NamedArray:
        """The rows of the table for the integer ``ids`` (any axes).

        ``mode`` (default ``None``: concrete out-of-range ids raise an ``IndexError``, traced
        ones give NaN rows), ``"fill"``, ``"clip"`` or ``"promise_in_bounds"``, and
        ``fill_value`` (default NaN) are :func:`namax.take`'s. Negative ids are out of range.

        >>> import jax, jax.numpy as jnp, namax as nx
        >>> Vocab, Embed, Pos = nx.make_axes(vocab=5, embed=2, position=2)
        >>> emb = Embedding.init(Vocab, Embed, key=jax.random.key(0))
        >>> emb(nx.named(jnp.array([1, 9]), Pos))
        Traceback (most recent call last):
        ...
        IndexError: Embedding: id 9 is out of range for Vocab 'vocab' of size 5 (at {'position': 1} of the ids with axes (position:2))
        >>> emb(nx.named(jnp.array([1, 9]), Pos), mode="fill", fill_value=0.0)["position", 1].array.tolist()
        [0.0, 0.0]
        """
        if not isinstance(ids, NamedArray):
            raise TypeError(f"Embedding: ids must be an integer NamedArray, got {type(ids).__name__}")
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise TypeError(f"Embedding: ids must be integers, got dtype {ids.dtype} (axes {_axes_str(ids.axes)})")
        if ids.has_axis(self.Vocab.name):
            raise ValueError(f"Embedding: ids with axes {_axes_str(ids.axes)} already have the Vocab axis "
                             f"{self.Vocab.name!r}; pass integer ids, not one-hot vectors")
        size = self.Vocab.size
        if mode not in ("fill", "clip"):
            _check_ids(ids, self.Vocab)
        if mode in (None, "fill"):  # a negative id is out of range (take would count it from the end)
            ids = NamedArray(jnp.where(ids.array < 0, size, ids.array), ids.axes) if _signed(ids) else ids
        rows = take(self.weight, self.Vocab, ids, mode=mode, fill_value=fill_value)
        if self._reparam_cls is not None and self.reparam.active_scale != 1:
            rows = rows * self.reparam.active_scale
        return rows

    def unembed(self, x: NamedArray) -> NamedArray:
        """Logits over ``Vocab``: ``x`` contracted with the table over the ``Embed`` axes."""
        logits = dot(x, self.weight, axis=ensure_tuple(self.Embed))
        if self._reparam_cls is not None and self.reparam.unembed_active_scale != 1:
            logits = logits * self.reparam.unembed_active_scale
        return logits


def _signed(ids: NamedArray) -> bool:
    return jnp.issubdtype(ids.dtype, jnp.signedinteger)


def _check_ids(ids: NamedArray, Vocab: Axis) -> None:
    """An IndexError for the first id outside ``[0, Vocab.size)`` when ``ids`` is concrete."""
    if isinstance(ids.array, jax.core.Tracer):
        return
    a = np.asarray(ids.array)
    bad = (a < 0) | (a >= Vocab.size)
    if bad.any():
        pos = tuple(int(p) for p in np.unravel_index(int(np.argmax(bad)), a.shape))
        at = f" (at {dict(zip(ids.axis_names, pos))} of the ids with axes {_axes_str(ids.axes)})" if ids.axes else ""
        raise IndexError(f"Embedding: id {a[pos]} is out of range for Vocab {Vocab.name!r} of size {Vocab.size}{at}")


__all__ = ["Embedding"]
