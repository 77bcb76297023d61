"""Losses over named axes: cross-entropy (integer or distribution targets), binary
cross-entropy, and the ``one_hot`` helper."""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ..axis import Axis, AxisSelection, AxisSelector, axis_name
from ..named import NamedArray, _axes_str, align, wrap
from ..ops import elementwise as ew, reductions as red
from ..ops.indexing import _default_fill, take
from .activations import log_sigmoid
from .normalization import log_softmax, logsumexp

REDUCTIONS = ("mean", "sum", None)


def one_hot(ids: NamedArray, Label: Axis, *, dtype: Any = jnp.float32, mode: Optional[str] = None) -> NamedArray:
    """``1`` at each id's position along the new axis ``Label``, ``0`` elsewhere.

    The result has ``ids``'s axes followed by ``Label``. Ids must lie in ``[0, Label.size)``:
    with ``mode=None`` (the default) an out-of-range id raises an ``IndexError`` when the
    ids are concrete and, under ``jit``, gives a row of NaN (for a non-float ``dtype``,
    ``jnp.take``'s fill: the most negative value for signed ints, the largest for unsigned,
    ``True`` for bool). ``mode="fill"``: those rows without the error; ``mode="zeros"``:
    all-zero rows (e.g. for padding ids), never an error.

    >>> import jax, jax.numpy as jnp, namax as nx
    >>> one_hot(nx.named(jnp.array([2, 0]), "batch"), nx.Axis("label", 3)).array.tolist()
    [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    >>> one_hot(nx.named(jnp.array([2, 7]), "batch"), nx.Axis("label", 3))
    Traceback (most recent call last):
    ...
    IndexError: one_hot: id 7 is out of range for axis 'label' of size 3 (at {'batch': 1} of the ids with axes (batch:2))
    >>> jax.jit(lambda i: one_hot(i, nx.Axis("label", 3)))(nx.named(jnp.array([2, 7]), "batch")).array.tolist()
    [[0.0, 0.0, 1.0], [nan, nan, nan]]
    """
    if not isinstance(Label, Axis):
        raise TypeError(f"one_hot: Label must be an Axis (with a size), got {Label!r}")
    if not isinstance(ids, NamedArray):
        raise TypeError(f"one_hot: ids must be an integer NamedArray, got {type(ids).__name__}")
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"one_hot: ids must be integers, got dtype {ids.dtype}")
    if ids.has_axis(Label.name):
        raise ValueError(f"one_hot: ids with axes {_axes_str(ids.axes)} already have the axis {Label.name!r}")
    if mode not in (None, "fill", "zeros"):
        raise ValueError(f"one_hot: mode must be None, 'fill' or 'zeros', got {mode!r}")
    if mode is None:
        _check_ids(ids, Label, None, "one_hot")
    hot = (ids.array[..., None] == jnp.arange(Label.size, dtype=ids.dtype)).astype(dtype)
    if mode != "zeros":
        bad = ((ids.array < 0) | (ids.array >= Label.size))[..., None]
        hot = jnp.where(bad, jnp.asarray(_default_fill(dtype), dtype), hot)
    return wrap(hot, ids.axes + (Label,))


def _check_ids(ids: NamedArray, Label: Axis, where: Optional[NamedArray], what: str) -> None:
    """An IndexError for the first concrete id outside ``[0, Label.size)`` (where ``where`` holds)."""
    if isinstance(ids.array, jax.core.Tracer):
        return
    a = np.asarray(ids.array)
    bad = (a < 0) | (a >= Label.size)
    bad = _unmasked(bad, ids, where)
    if bad is not None and bad.any():
        pos = tuple(int(p) for p in np.unravel_index(int(np.argmax(bad)), a.shape))
        at = f" (at {dict(zip(ids.axis_names, pos))} of the ids with axes {_axes_str(ids.axes)})" if ids.axes else ""
        raise IndexError(f"{what}: id {a[pos]} is out of range for axis {Label.name!r} of size {Label.size}{at}")


def _unmasked(bad: np.ndarray, x: NamedArray, where: Optional[NamedArray]) -> Optional[np.ndarray]:
    """``bad`` restricted to the entries ``where`` keeps (None: cannot tell, the mask is traced)."""
    if where is None:
        return bad
    if isinstance(where, NamedArray) and isinstance(where.array, jax.core.Tracer):
        return None
    if not isinstance(where, NamedArray) or any(not x.has_axis(a.name) for a in where.axes):
        return bad  # _reduce reports the bad mask
    keep = np.asarray(align(where, x.axes)).astype(bool)
    return bad & np.broadcast_to(keep, bad.shape)


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

    Integer targets must lie in ``[0, Label.size)`` where ``where`` holds (masked-out
    positions may hold any id, e.g. padding). An out-of-range target raises an
    ``IndexError`` when the targets (and mask) are concrete; under ``jit`` its loss is NaN,
    never the loss of another class.

    >>> import jax.numpy as jnp, namax as nx
    >>> Batch, Label = nx.make_axes(batch=2, label=3)
    >>> logits = nx.zeros((Batch, Label))
    >>> round(float(cross_entropy_loss(logits, Label, nx.named(jnp.array([0, 2]), Batch)).array), 4)
    1.0986
    >>> cross_entropy_loss(logits, Label, nx.named(jnp.array([0, 7]), Batch))
    Traceback (most recent call last):
    ...
    IndexError: cross_entropy_loss: id 7 is out of range for axis 'label' of size 3 (at {'batch': 1} of the ids with axes (batch:2))
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
        Label_axis = logits.axes[logits.axis_index(name)]
        _check_ids(targets, Label_axis, where, "cross_entropy_loss")
        # out of range (masked, or traced): the NaN fill, never another class's logit
        safe = jnp.where((targets.array < 0) | (targets.array >= Label_axis.size), Label_axis.size, targets.array)
        loss = logsumexp(logits, name) - take(logits, name, NamedArray(safe, targets.axes), mode="fill",
                                              fill_value=jnp.nan)
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

    Targets must lie in ``[0, 1]`` where ``where`` holds: a concrete target outside it (or
    NaN) raises a ``ValueError``; under ``jit`` its loss is NaN.

    >>> import namax as nx
    >>> B = nx.Axis("batch", 2)
    >>> round(float(binary_cross_entropy_loss(nx.zeros(B), nx.ones(B)).array), 4)
    0.6931
    >>> binary_cross_entropy_loss(nx.zeros(B), nx.full(B, 2.0))
    Traceback (most recent call last):
    ...
    ValueError: binary_cross_entropy_loss: target 2.0 is outside [0, 1] (at {'batch': 0} of the targets with axes (batch:2))
    """
    if not isinstance(logits, NamedArray) or not isinstance(targets, NamedArray):
        raise TypeError("binary_cross_entropy_loss: logits and targets must be NamedArrays")
    if not isinstance(targets.array, jax.core.Tracer):
        a = np.asarray(targets.array)
        bad = _unmasked(~((a >= 0) & (a <= 1)), targets, where)
        if bad is not None and bad.any():
            pos = tuple(int(p) for p in np.unravel_index(int(np.argmax(bad)), a.shape))
            at = f" (at {dict(zip(targets.axis_names, pos))} of the targets with axes {_axes_str(targets.axes)})" \
                if targets.axes else ""
            raise ValueError(f"binary_cross_entropy_loss: target {a[pos]} is outside [0, 1]{at}")
    targets = targets.astype(logits.dtype)
    loss = -(targets * log_sigmoid(logits) + (1.0 - targets) * log_sigmoid(-logits))
    ok = (targets.array >= 0) & (targets.array <= 1)
    loss = NamedArray(jnp.where(jnp.broadcast_to(align(NamedArray(ok, targets.axes), loss.axes), loss.array.shape),
                                loss.array, jnp.nan), loss.axes)
    return _reduce(loss, reduction, where, reduction_axis, "binary_cross_entropy_loss")


__all__ = ["one_hot", "cross_entropy_loss", "binary_cross_entropy_loss"]
