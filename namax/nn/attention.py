"""Attention by name: ``dot_product_attention``, boolean masks (causal, padding) and the
``MultiHeadAttention`` module.

Masks are bool NamedArrays, True where a query position may attend to a key position;
they broadcast by name (a ``[position, key_position]`` causal mask serves every batch
element and head).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import equinox as eqx
import jax
import jax.numpy as jnp

from ..axis import Axis, AxisSelection, AxisSelector, axis_name, axis_names, ensure_tuple
from ..named import NamedArray, _axes_str
from ..ops import elementwise as ew
from ..ops.creation import arange
from ..ops.dot import dot
from .linear import Linear
from .normalization import softmax


def causal_mask(QPos: Axis, KPos: Axis, q_start: Any = 0, k_start: Any = 0) -> NamedArray:
    """``[QPos, KPos]`` bool mask: query ``i`` may attend to key ``j`` when ``i + q_start >= j + k_start``.

    >>> import namax as nx
    >>> Q, K = nx.Axis("position", 3), nx.Axis("key_position", 3)
    >>> causal_mask(Q, K).array.astype(int).tolist()
    [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """
    return (arange(QPos) + q_start).broadcast_axis(KPos).rearrange((QPos.name, KPos.name)) >= arange(KPos) + k_start


def padding_mask(KPos: Axis, lengths: Any) -> NamedArray:
    """Bool mask True for key positions before ``lengths`` (an int, or an int NamedArray per example).

    >>> import jax.numpy as jnp, namax as nx
    >>> K, B = nx.Axis("key_position", 3), nx.Axis("batch", 2)
    >>> padding_mask(K, nx.named(jnp.array([1, 3]), B)).array.astype(int).tolist()
    [[1, 0, 0], [1, 1, 1]]
    """
    mask = arange(KPos) < lengths
    if isinstance(lengths, NamedArray):
        return mask.rearrange((*lengths.axis_names, KPos.name))
    return mask


def combine_masks_and(*masks: Optional[NamedArray]) -> Optional[NamedArray]:
    """The elementwise AND of the masks given (``None`` entries ignored; all ``None`` gives ``None``).

    >>> import namax as nx
    >>> Q, K = nx.Axis("position", 3), nx.Axis("key_position", 3)
    >>> combine_masks_and(causal_mask(Q, K), None, padding_mask(K, 2)).array.astype(int).tolist()
    [[1, 0, 0], [1, 1, 0], [1, 1, 0]]
    >>> combine_masks_and(None, None) is None
    True
    """
    present = [m for m in masks if m is not None]
    if not present:
        return None
    out = present[0]
    for m in present[1:]:
        out = out & m
    return out


def combine_masks_or(*masks: Optional[NamedArray]) -> Optional[NamedArray]:
    """The elementwise OR of the masks given (``None`` entries ignored; all ``None`` gives ``None``).

    >>> import namax as nx
    >>> Q, K = nx.Axis("position", 3), nx.Axis("key_position", 3)
    >>> combine_masks_or(causal_mask(Q, K), padding_mask(K, 2)).array.astype(int).tolist()
    [[1, 1, 0], [1, 1, 0], [1, 1, 1]]
    """
    present = [m for m in masks if m is not None]
    if not present:
        return None
    out = present[0]
    for m in present[1:]:
        out = out | m
    return out


def dot_product_attention(
    QPos: AxisSelector,
    KPos: AxisSelection,
    Key: AxisSelector,
    query: NamedArray,
    key: NamedArray,
    value: NamedArray,
    mask: Optional[NamedArray] = None,
    bias: Optional[NamedArray] = None,
    *,
    attention_dtype: Any = None,
    precision: Any = None,
) -> NamedArray:
    """``softmax(query . key / sqrt(|Key|) + bias, masked) . value``, contracting by name.

    ``query`` has ``QPos`` and ``Key``; ``key`` has ``KPos`` (one axis or several) and
    ``Key``; ``value`` has ``KPos``. Every other shared axis (batch, head) is matched
    elementwise. ``mask`` (bool, True = attend) and ``bias`` (added to the scores) may have
    any subset of the score axes. The result has ``query``'s axes with ``Key`` replaced by
    ``value``'s non-``KPos`` axes. ``attention_dtype`` is the dtype of the scores and softmax.

    >>> import jax, namax as nx
    >>> Pos, KPos, Key = nx.Axis("position", 4), nx.Axis("key_position", 4), nx.Axis("key", 2)
    >>> q = nx.ones((Pos, Key)); k = v = nx.ones((KPos, Key))
    >>> dot_product_attention(Pos, KPos, Key, q, k, v, mask=causal_mask(Pos, KPos)).axes
    (Axis('position', 4), Axis('key', 2))
    """
    for arg, arr in (("query", query), ("key", key), ("value", value)):
        if not isinstance(arr, NamedArray):
            raise TypeError(f"dot_product_attention: {arg} must be a NamedArray, got {type(arr).__name__}")
    q_name, key_name, kpos = axis_name(QPos), axis_name(Key), axis_names(KPos)
    if not query.has_axis(q_name):
        raise ValueError(f"dot_product_attention: query {_axes_str(query.axes)} lacks the query axis {q_name!r}")
    for arg, arr, needed in (("query", query, (key_name,)), ("key", key, kpos + (key_name,)), ("value", value, kpos)):
        missing = [n for n in needed if not arr.has_axis(n)]
        if missing:
            raise ValueError(f"dot_product_attention: {arg} {_axes_str(arr.axes)} lacks the axes {missing}")
    if key.has_axis(q_name) or query.has_axis(kpos[0]):
        raise ValueError(
            f"dot_product_attention: query and key share a position axis name ({q_name!r} / {kpos}); "
            "rename the key's positions (e.g. key.rename({'position': 'key_position'}))"
        )
    if attention_dtype is not None:
        query, key = query.astype(attention_dtype), key.astype(attention_dtype)
    result_order = [n for n in query.axis_names if n != key_name]
    # Put the query positions right before Key: the scores then come out of dot_general in
    # its natural order (shared axes, query positions, key positions), so the transposes fall
    # on the small query and output rather than on the scores and their gradient.
    query = query.rearrange((..., q_name, key_name))
    size = query.axis_size(key_name)
    scores = dot(query, key, axis=key_name, precision=precision) * (1.0 / math.sqrt(size))
    order = scores.axis_names
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        if not jnp.issubdtype(mask.dtype, jnp.bool_):
            raise TypeError(f"dot_product_attention: mask must be bool (True = attend), got dtype {mask.dtype}")
        scores = ew.where(mask, scores, jnp.finfo(scores.dtype).min)
    if scores.axis_names != order:
        extra = [n for n in scores.axis_names if n not in order]
        if extra:
            raise ValueError(f"dot_product_attention: mask/bias add axes {extra} that the scores {order} lack")
        scores = scores.rearrange(order)
    weights = softmax(scores, kpos).astype(value.dtype)
    out = dot(weights, value, axis=kpos, precision=precision)
    value_axes = [n for n in out.axis_names if n not in result_order]
    return out.rearrange(tuple(result_order + value_axes))


class MultiHeadAttention(eqx.Module):
    """Multi-head (self- or cross-) attention over a named position axis.

    ``x`` has ``Pos`` (by name; any size) and ``Embed``; the keys and values come from
    ``context`` (default ``x``), whose ``Pos`` axis is renamed to ``KPos`` (default
    ``"key_" + Pos.name``). ``causal=True`` adds a causal mask; ``mask`` (bool, over any of
    ``Pos``, ``KPos``, batch, ``Heads``) is ANDed with it.

    >>> import jax, namax as nx
    >>> Pos, Embed, Heads, HeadSize = nx.make_axes(position=5, embed=8, heads=2, head_size=4)
    >>> mha = MultiHeadAttention.init(Pos, Embed, Heads, HeadSize, causal=True, key=jax.random.key(0))
    >>> mha(nx.ones((Pos, Embed))).axes
    (Axis('position', 5), Axis('embed', 8))
    """

    q_proj: Linear
    k_proj: Linear
    v_proj: Linear
    o_proj: Linear
    Pos: str = eqx.field(static=True)
    KPos: str = eqx.field(static=True)
    HeadSize: Axis = eqx.field(static=True)
    causal: bool = eqx.field(static=True, default=False)

    @staticmethod
    def init(Pos: AxisSelector, Embed: AxisSpec, Heads: Axis, HeadSize: Axis, *, key: jax.Array,
             causal: bool = False, use_bias: bool = True, KPos: Optional[str] = None,
             dtype: Any = jnp.float32) -> "MultiHeadAttention":
        """Four projections: ``Embed -> (Heads, HeadSize)`` for q, k, v and back for the output."""
        kq, kk, kv, ko = jax.random.split(key, 4)
        pos = axis_name(Pos)
        kpos = KPos if KPos is not None else "key_" + pos
        inner = (Heads, HeadSize)
        return MultiHeadAttention(
            Linear.init(Embed, inner, key=kq, use_bias=use_bias, dtype=dtype),
            Linear.init(Embed, inner, key=kk, use_bias=use_bias, dtype=dtype),
            Linear.init(Embed, inner, key=kv, use_bias=use_bias, dtype=dtype),
            Linear.init(inner, Embed, key=ko, use_bias=use_bias, dtype=dtype),
            pos, kpos, HeadSize, causal,
        )

    def __call__(self, x: NamedArray, context: Optional[NamedArray] = None,
                 mask: Optional[NamedArray] = None) -> NamedArray:
        context = x if context is None else context
        for arg, arr in (("x", x), ("context", context)):
            if not isinstance(arr, NamedArray) or not arr.has_axis(self.Pos):
                axes = _axes_str(arr.axes) if isinstance(arr, NamedArray) else type(arr).__name__
                raise ValueError(f"MultiHeadAttention: {arg} {axes} has no position axis {self.Pos!r}")
        q = self.q_proj(x)
        k = self.k_proj(context).rename({self.Pos: self.KPos})
        v = self.v_proj(context).rename({self.Pos: self.KPos})
        if self.causal:
            causal = causal_mask(x.resolve_axis(self.Pos), k.resolve_axis(self.KPos))
            mask = combine_masks_and(causal, mask)
        answers = dot_product_attention(self.Pos, self.KPos, self.HeadSize, q, k, v, mask=mask)
        return self.o_proj(answers)


__all__ = [
    "causal_mask", "padding_mask", "combine_masks_and", "combine_masks_or", "dot_product_attention",
    "MultiHeadAttention",
]
