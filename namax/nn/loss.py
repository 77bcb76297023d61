"""Losses over named axes: cross-entropy (integer or distribution targets), binary
cross-entropy, and the ``one_hot`` helper."""

from __future__ import annotations

from typing import Any, Optional

import jax.numpy as jnp

from ..axis import Axis, AxisSelection, AxisSelector, axis_name
from ..named import NamedArray, _axes_str, wrap
from ..ops import elementwise as ew, reductions as red
from ..ops.indexing import take
from .activations import log_sigmoid
from .normalization import log_softmax, logsumexp

REDUCTIONS = ("mean", "sum", None)


def one_hot(ids: NamedArray, Label: Axis, *, dtype: Any = jnp.float32) -> NamedArray:
    """``1`` at each id's position along the new axis ``Label``, ``0`` elsewhere.

    Ids outside ``[0, Label.size)`` give all-zero rows. The result has ``ids``'s axes
    followed by ``Label``.

    >>> import jax.numpy as jnp, namax as nx
    >>> one_hot(nx.named(jnp.array([2, 0]), "batch"), nx.Axis("label", 3)).array.tolist()
    [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    """
    if not isinstance(Label, Axis):
        raise TypeError(f"one_hot: Label must be an Axis (with a size), got {Label!r}")
    if not isinstance(ids, NamedArray):
        raise TypeError(f"one_hot: ids must be an integer NamedArray, got {type(ids).__name__}")
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"one_hot: ids must be integers, got dtype {ids.dtype}")
    if ids.has_axis(Label.name):
        raise ValueError(f"one_hot: ids with axes {_axes_str(ids.axes)} already have the axis {Label.name!r}")
    hot = ids.array[..., None] == jnp.arange(Label.size, dtype=ids.dtype)
    return wrap(hot.astype(dtype), ids.axes + (Label,))


def _reduce(loss: NamedArray, reduction: Optional[str], where: Optional[NamedArray],
            reduction_axis: Optional[AxisSelection], what: str) -> NamedArray:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{what}: reduction must be 'mean', 'sum' or None, got {reduction!r}")
    if where is not None:
        if not isinstance(where, NamedArray):
            raise TypeError(f"{what}: where= must be a NamedArray mask, got {type(where).__name__}")
        extra = [a.name for a in where.axes if not loss.has_axis(a.name)]
        if extra:
            raise ValueError(f"{what}: where= has axes {extra} that the loss {_axes_str(loss.axes)} lacks")
    if reduction is None:
        return loss if where is None else ew.where(where, loss, 0.0).rearrange(loss.axis_names)
    if reduction == "sum":
        return red.sum(loss, reduction_axis, where=where)
    if where is None:
        return red.mean(loss, reduction_axis)
    mask = where.broadcast_to(loss.axes) if where.axes != loss.axes else where
    total = red.sum(loss, reduction_axis, where=mask)
    count = red.sum(mask.astype(loss.dtype), reduction_axis)
    return total / count


def cross_entropy_loss(
    logits: NamedArray,
    Label: AxisSelector,
    targets: NamedArray,
    *,
    reduction: Optional[str] = "mean",
    where: Optional[NamedArray] = None,
    reduction_axis: Optional[AxisSelection] = None,
) -> NamedArray:
    """Softmax cross-entropy of ``logits`` over ``Label``.

    ``targets`` is either an integer NamedArray without ``Label`` (the class ids) or a float
    NamedArray with ``Label`` (a distribution, e.g. from :func:`one_hot`). ``reduction`` is
    ``"mean"``, ``"sum"`` (over ``reduction_axis``, default every axis) or ``None`` (the
    per-example losses); ``where`` is a bool mask of the examples that count (the mean
    divides by its count).

    >>> import jax.numpy as jnp, namax as nx
    >>> Batch, Label = nx.make_axes(batch=2, label=3)
    >>> logits = nx.zeros((Batch, Label))
    >>> round(float(cross_entropy_loss(logits, Label, nx.named(jnp.array([0, 2]), Batch)).array), 4)
    1.0986
    """
    if not isinstance(logits, NamedArray) or not isinstance(targets, NamedArray):
        raise TypeError("cross_entropy_loss: logits and targets must be NamedArrays")
    name = axis_name(Label)
    logits.axis_index(Label)
    if targets.has_axis(name):
        loss = -red.sum(log_softmax(logits, name) * targets, name)
    else:
        if not jnp.issubdtype(targets.dtype, jnp.integer):
            raise TypeError(
                f"cross_entropy_loss: targets without the {name!r} axis must be integer ids, got dtype "
                f"{targets.dtype}; give a distribution with the {name!r} axis for soft targets"
            )
        extra = [a.name for a in targets.axes if not logits.has_axis(a.name)]
        if extra:
            raise ValueError(f"cross_entropy_loss: targets have axes {extra} that the logits "
                             f"{_axes_str(logits.axes)} lack")
        loss = logsumexp(logits, name) - take(logits, name, targets)
    return _reduce(loss, reduction, where, reduction_axis, "cross_entropy_loss")


def binary_cross_entropy_loss(
    logits: NamedArray,
    targets: NamedArray,
    *,
    reduction: Optional[str] = "mean",
    where: Optional[NamedArray] = None,
    reduction_axis: Optional[AxisSelection] = None,
) -> NamedArray:
    """Sigmoid cross-entropy of ``logits`` against 0/1 (or soft) ``targets``, elementwise.

    >>> import namax as nx
    >>> B = nx.Axis("batch", 2)
    >>> round(float(binary_cross_entropy_loss(nx.zeros(B), nx.ones(B)).array), 4)
    0.6931
    """
    if not isinstance(logits, NamedArray) or not isinstance(targets, NamedArray):
        raise TypeError("binary_cross_entropy_loss: logits and targets must be NamedArrays")
    targets = targets.astype(logits.dtype)
    loss = -(targets * log_sigmoid(logits) + (1.0 - targets) * log_sigmoid(-logits))
    return _reduce(loss, reduction, where, reduction_axis, "binary_cross_entropy_loss")


__all__ = ["one_hot", "cross_entropy_loss", "binary_cross_entropy_loss"]
