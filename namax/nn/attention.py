"""Attention by name: ``dot_product_attention``, boolean masks (causal, padding) and the
``MultiHeadAttention`` module.

Masks are bool NamedArrays, True where a query position may attend to a key position;
they broadcast by name (a ``[position, key_position]`` causal mask serves every batch
element and head).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import equinox as eqx
import jax
import jax.numpy as jnp

from ..axis import Axis, AxisSelection, AxisSelector, axis_name, axis_names, ensure_tuple
from ..named import NamedArray, _axes_str, wrap
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


def prefix_lm_mask(QSeqLen: Axis, KSeqLen: Axis, prefix_len: Any, q_start: Any = 0, k_start: Any = 0) -> NamedArray:
    """``[QSeqLen, KSeqLen]`` PrefixLM mask: every query sees the first ``prefix_len`` keys
    (counted from the start of ``KSeqLen``), and the later keys causally (as :func:`causal_mask`
    with ``q_start``/``k_start``).

    >>> import namax as nx
    >>> Q, K = nx.Axis("position", 4), nx.Axis("key_position", 4)
    >>> prefix_lm_mask(Q, K, 2).array.astype(int).tolist()
    [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    """
    for arg, ax in (("QSeqLen", QSeqLen), ("KSeqLen", KSeqLen)):
        if not isinstance(ax, Axis):
            raise TypeError(f"prefix_lm_mask: {arg} must be an Axis (with a size), got {ax!r}")
    if isinstance(prefix_len, numbers.Integral) and prefix_len < 0:
        raise ValueError(f"prefix_lm_mask: prefix_len must be >= 0, got {prefix_len}")
    causal = causal_mask(QSeqLen, KSeqLen, q_start=q_start, k_start=k_start)
    return causal | (arange(KSeqLen) < prefix_len)


def forgetful_causal_mask(KPos: Axis, mask_prob: Any, sample_prob: bool = True, *, key: jax.Array) -> NamedArray:
    """A random bool ``[KPos]`` mask that drops each key position with probability
    ``mask_prob`` (Forgetful Causal Masking, arXiv:2210.13432); position 0 is always kept.

    With ``sample_prob=True`` (the paper's recipe) the drop probability itself is drawn
    uniformly from ``[0, mask_prob)`` first. AND the result with a causal mask.

    >>> import jax, namax as nx
    >>> K = nx.Axis("key_position", 6)
    >>> m = forgetful_causal_mask(K, 0.5, key=jax.random.key(0))
    >>> m.axes, m.dtype, bool(m.array[0])
    ((Axis('key_position', 6),), dtype('bool'), True)
    """
    if not isinstance(KPos, Axis):
        raise TypeError(f"forgetful_causal_mask: KPos must be an Axis (with a size), got {KPos!r}")
    zeroth = arange(KPos) == 0
    if isinstance(mask_prob, numbers.Real):
        if not 0.0 <= mask_prob <= 1.0:
            raise ValueError(f"forgetful_causal_mask: mask_prob must lie in [0, 1], got {mask_prob}")
        if mask_prob == 0:
            return wrap(jnp.ones((KPos.size,), dtype=jnp.bool_), (KPos,))
        if mask_prob == 1:
            return zeroth
    p = mask_prob
    if sample_prob:
        key, sub = jax.random.split(key)
        p = jax.random.uniform(sub, (), minval=0.0, maxval=mask_prob)
    keep = wrap(jax.random.bernoulli(key, 1.0 - p, (KPos.size,)), (KPos,))
    return keep | zeroth


def alibi_slopes(Heads: Axis, bias_max: float = 8) -> NamedArray:
    """The per-head ALiBi slopes over ``Heads`` (arXiv:2108.12409): for ``n`` heads, a power
    of two, ``r, r**2, ..., r**n`` with ``r = 2 ** (-bias_max / n)``; otherwise those of the
    nearest smaller power of two followed by every other slope of the next larger one.

    >>> import namax as nx
    >>> alibi_slopes(nx.Axis("heads", 2)).array.tolist()
    [0.0625, 0.00390625]
    """
    if not isinstance(Heads, Axis) or Heads.size < 1:
        raise TypeError(f"alibi_slopes: Heads must be an Axis of size >= 1, got {Heads!r}")

    def power_of_two(n: int) -> list[float]:
        r = 2.0 ** (-bias_max / n)
        return [r ** (i + 1) for i in range(n)]

    n = Heads.size
    low = 2 ** int(math.floor(math.log2(n)))
    slopes = power_of_two(low) if low == n else power_of_two(low) + power_of_two(2 * low)[0::2][: n - low]
    return wrap(jnp.asarray(slopes, dtype=jnp.float32), (Heads,))


def alibi_attention_bias(Heads: Axis, KPos: Axis, bias_max: float = 8, dtype: Any = jnp.float32) -> NamedArray:
    """``[Heads, KPos]`` ALiBi bias: each head's slope (:func:`alibi_slopes`) times the key
    position. Added to the scores it equals the paper's ``-slope * (i - j)`` up to a
    per-query constant, which the softmax ignores.

    >>> import namax as nx
    >>> b = alibi_attention_bias(nx.Axis("heads", 2), nx.Axis("key_position", 3))
    >>> b.axes, b.array.tolist()
    ((Axis('heads', 2), Axis('key_position', 3)), [[0.0, 0.0625, 0.125], [0.0, 0.00390625, 0.0078125]])
    """
    if not isinstance(KPos, Axis):
        raise TypeError(f"alibi_attention_bias: KPos must be an Axis (with a size), got {KPos!r}")
    if KPos.name == getattr(Heads, "name", None):
        raise ValueError(f"alibi_attention_bias: Heads and KPos share the name {KPos.name!r}")
    slopes = alibi_slopes(Heads, bias_max).array
    return wrap((slopes[:, None] * jnp.arange(KPos.size, dtype=jnp.float32)[None, :]).astype(dtype), (Heads, KPos))


def mask_to_bias(mask: NamedArray, mask_value: float = -1e9) -> NamedArray:
    """An additive bias from a bool mask: ``0`` where the mask is True (may attend),
    ``mask_value`` where it is False; same axes.

    (Haliax's ``mask_to_bias`` returns ``mask * mask_value``, i.e. ``mask_value`` where the
    mask is True; here masks mean "True = attend" throughout, so the bias blocks the False
    entries.)

    >>> import namax as nx
    >>> Q, K = nx.Axis("position", 2), nx.Axis("key_position", 2)
    >>> mask_to_bias(causal_mask(Q, K), -100.0).array.tolist()
    [[0.0, -100.0], [0.0, 0.0]]
    """
    if not isinstance(mask, NamedArray):
        raise TypeError(f"mask_to_bias: mask must be a bool NamedArray, got {type(mask).__name__}")
    if not jnp.issubdtype(mask.dtype, jnp.bool_):
        raise TypeError(f"mask_to_bias: mask {_axes_str(mask.axes)} must be bool (True = attend), got dtype {mask.dtype}")
    return wrap(jnp.where(mask.array, 0.0, mask_value).astype(jnp.result_type(float)), mask.axes)


def _check_qk(Key: AxisSelector, KPos: AxisSelection, query: Any, key: Any, what: str) -> tuple[str, tuple[str, ...]]:
    for arg, arr in (("query", query), ("key", key)):
        if not isinstance(arr, NamedArray):
            raise TypeError(f"{what}: {arg} must be a NamedArray, got {type(arr).__name__}")
    key_name, kpos = axis_name(Key), axis_names(KPos)
    for arg, arr, needed in (("query", query, (key_name,)), ("key", key, kpos + (key_name,))):
        missing = [n for n in needed if not arr.has_axis(n)]
        if missing:
            raise ValueError(f"{what}: {arg} {_axes_str(arr.axes)} lacks the axes {missing}")
    if query.axis_size(key_name) != key.axis_size(key_name):
        raise ValueError(f"{what}: the {key_name!r} axis has size {query.axis_size(key_name)} in the query "
                         f"{_axes_str(query.axes)} but {key.axis_size(key_name)} in the key {_axes_str(key.axes)}")
    shared = [n for n in kpos if query.has_axis(n)]
    if shared:
        raise ValueError(f"{what}: the query {_axes_str(query.axes)} has the key position axes {shared}; "
                         "rename the key's positions (e.g. key.rename({'position': 'key_position'}))")
    return key_name, kpos


def dot_product_attention_weights(
    Key: AxisSelector,
    KPos: AxisSelection,
    query: NamedArray,
    key: NamedArray,
    mask: Optional[NamedArray] = None,
    bias: Optional[NamedArray] = None,
    attention_dtype: Any = None,
    precision: Any = None,
    scaling_factor: Optional[float] = None,
) -> NamedArray:
    """The attention weights ``softmax(scaling_factor * query . key + bias, masked)`` over ``KPos``.

    ``query`` and ``key`` are contracted over ``Key``; every other axis they share (batch,
    heads) is matched elementwise, and the query's position axis must have another name
    than ``KPos``. ``scaling_factor`` defaults to ``1/sqrt(|Key|)``; ``mask`` (bool, True =
    attend) and ``bias`` may have any subset of the score axes; masked scores become the
    dtype's minimum, as in :func:`dot_product_attention` (a fully masked row is uniform).
    The weights have the query's axes without ``Key``, then ``KPos``, in the query's dtype;
    ``attention_dtype`` is the dtype of the scores and softmax.

    >>> import namax as nx
    >>> Pos, KPos, Key = nx.Axis("position", 3), nx.Axis("key_position", 3), nx.Axis("key", 2)
    >>> w = dot_product_attention_weights(Key, KPos, nx.ones((Pos, Key)), nx.ones((KPos, Key)),
    ...                                   mask=causal_mask(Pos, KPos))
    >>> w.axes, [round(v, 3) for v in w.array[1].tolist()]
    ((Axis('position', 3), Axis('key_position', 3)), [0.5, 0.5, 0.0])
    """
    what = "dot_product_attention_weights"
    key_name, kpos = _check_qk(Key, KPos, query, key, what)
    orig_dtype = query.dtype
    if scaling_factor is None:
        scaling_factor = 1.0 / math.sqrt(query.axis_size(key_name))
    if attention_dtype is not None:
        query, key = query.astype(attention_dtype), key.astype(attention_dtype)
    scores = dot(query * scaling_factor, key, axis=key_name, precision=precision)
    order = tuple(n for n in query.axis_names if n != key_name) + tuple(
        n for n in scores.axis_names if not query.has_axis(n))
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        if not isinstance(mask, NamedArray) or not jnp.issubdtype(mask.dtype, jnp.bool_):
            raise TypeError(f"{what}: mask must be a bool NamedArray (True = attend), got "
                            f"{getattr(mask, 'dtype', type(mask).__name__)}")
        scores = ew.where(mask, scores, jnp.finfo(scores.dtype).min)
    extra = [n for n in scores.axis_names if n not in order]
    if extra:
        raise ValueError(f"{what}: mask/bias add axes {extra} that the scores {order} lack")
    return softmax(scores.rearrange(order), kpos).astype(orig_dtype)


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
    "causal_mask", "padding_mask", "prefix_lm_mask", "forgetful_causal_mask", "alibi_slopes", "alibi_attention_bias",
    "mask_to_bias", "combine_masks_and", "combine_masks_or", "dot_product_attention_weights",
    "dot_product_attention", "MultiHeadAttention",
]
