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
    loss = _per_example_xent(logits, Label, targets, where, "cross_entropy_loss")
    return _reduce(loss, reduction, where, reduction_axis, "cross_entropy_loss")


def _per_example_xent(logits: NamedArray, Label: AxisSelector, targets: NamedArray,
                      where: Optional[NamedArray], what: str) -> NamedArray:
    """The unreduced cross-entropy (integer ids, range-checked, or a distribution over ``Label``)."""
    if not isinstance(logits, NamedArray) or not isinstance(targets, NamedArray):
        raise TypeError(f"{what}: logits and targets must be NamedArrays")
    name = axis_name(Label)
    logits.axis_index(Label)
    if targets.has_axis(name):
        return -red.sum(log_softmax(logits, name) * targets, name)
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise TypeError(
            f"{what}: targets without the {name!r} axis must be integer ids, got dtype "
            f"{targets.dtype}; give a distribution with the {name!r} axis for soft targets"
        )
    extra = [a.name for a in targets.axes if not logits.has_axis(a.name)]
    if extra:
        raise ValueError(f"{what}: targets have axes {extra} that the logits {_axes_str(logits.axes)} lack")
    Label_axis = logits.axes[logits.axis_index(name)]
    _check_ids(targets, Label_axis, where, what)
    # out of range (masked, or traced): the NaN fill, never another class's logit
    safe = jnp.where((targets.array < 0) | (targets.array >= Label_axis.size), Label_axis.size, targets.array)
    return logsumexp(logits, name) - take(logits, name, NamedArray(safe, targets.axes), mode="fill",
                                          fill_value=jnp.nan)


def cross_entropy_loss_and_log_normalizers(
    pred_y: NamedArray,
    Label: AxisSelector,
    target_y: NamedArray,
) -> tuple[NamedArray, NamedArray]:
    """The unreduced cross-entropy of the logits ``pred_y`` over ``Label``, and their
    log-normalizers ``logsumexp(pred_y, Label)`` (e.g. for a z-loss).

    ``target_y`` is a distribution with the ``Label`` axis (Haliax's form) or integer class
    ids without it, checked as in :func:`cross_entropy_loss`: a concrete out-of-range id
    raises an ``IndexError``, a traced one gives a NaN loss. Both results have ``pred_y``'s
    axes without ``Label``.

    >>> import jax.numpy as jnp, namax as nx
    >>> Batch, Label = nx.make_axes(batch=2, label=3)
    >>> loss, log_z = cross_entropy_loss_and_log_normalizers(nx.zeros((Batch, Label)), Label,
    ...                                                      nx.named(jnp.array([0, 2]), Batch))
    >>> [round(v, 4) for v in loss.array.tolist()], loss.axes == log_z.axes == (Batch,)
    ([1.0986, 1.0986], True)
    """
    loss = _per_example_xent(pred_y, Label, target_y, None, "cross_entropy_loss_and_log_normalizers")
    return loss, logsumexp(pred_y, axis_name(Label))


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


def _is_mean(reduction: Any) -> bool:
    return (isinstance(reduction, str) and reduction == "mean") or reduction is red.mean


#: reductions by name; ``reduce_loss`` also takes these functions (or any namax reduction) directly
_REDUCTION_FNS = {"mean": red.mean, "sum": red.sum}


def _check_loss_mask(arr: NamedArray, mask: Any, arg: str, what: str) -> None:
    if not isinstance(mask, NamedArray):
        raise TypeError(f"{what}: {arg}= must be a NamedArray, got {type(mask).__name__}")
    extra = [a.name for a in mask.axes if not arr.has_axis(a.name)]
    if extra:
        raise ValueError(f"{what}: {arg}= has axes {extra} that the loss {_axes_str(arr.axes)} lacks")
    for a in mask.axes:
        if arr.axis_size(a.name) != a.size:
            raise ValueError(f"{what}: {arg}= has axis {a.name!r} of size {a.size} but the loss "
                             f"{_axes_str(arr.axes)} has size {arr.axis_size(a.name)}")


def maybe_reduce_loss(
    arr: NamedArray,
    reduction: Any,
    reduction_axis: Optional[AxisSelection],
    where: Optional[NamedArray],
    weight: Optional[NamedArray],
) -> NamedArray:
    """:func:`reduce_loss` with every argument given (Haliax's positional form).

    >>> import namax as nx
    >>> B = nx.Axis("batch", 4)
    >>> maybe_reduce_loss(nx.arange(B, dtype=float), "sum", None, None, None).array.item()
    6.0
    """
    what = "reduce_loss"
    if not isinstance(arr, NamedArray):
        raise TypeError(f"{what}: the loss must be a NamedArray, got {type(arr).__name__}")
    if reduction is not None and not callable(reduction) and reduction not in _REDUCTION_FNS:
        raise ValueError(f"{what}: reduction must be 'mean', 'sum', None or a reduction function, got {reduction!r}")
    if where is not None:
        _check_loss_mask(arr, where, "where", what)
        if not jnp.issubdtype(where.dtype, jnp.bool_):
            raise TypeError(f"{what}: where= must be a bool mask, got dtype {where.dtype}")
    if weight is not None:
        _check_loss_mask(arr, weight, "weight", what)
    if reduction_axis is not None:
        for name in (axis_name(a) for a in (reduction_axis if isinstance(reduction_axis, (tuple, list))
                                            else (reduction_axis,))):
            if not arr.has_axis(name):
                raise ValueError(f"{what}: reduction_axis {name!r} is not an axis of the loss {_axes_str(arr.axes)}")
    # the effective weight: weight (default 1) where the mask holds, 0 elsewhere; masked-out
    # entries are *selected* away, so a NaN there (e.g. an out-of-range padding target) never leaks
    w = None if weight is None else weight.astype(arr.dtype).broadcast_to(arr.axes)
    if where is not None:
        w = ew.where(where, w if w is not None else 1.0, 0.0).astype(arr.dtype).broadcast_to(arr.axes)
        weighted = ew.where(where, arr * w, 0.0).rearrange(arr.axis_names)
    elif w is not None:
        weighted = arr * w
    else:
        weighted = arr
    if reduction is None or reduction_axis == ():
        return weighted
    fn = _REDUCTION_FNS[reduction] if isinstance(reduction, str) else reduction
    if w is None:
        return fn(arr, axis=reduction_axis)
    if not _is_mean(reduction):
        return fn(weighted, axis=reduction_axis)
    total = red.sum(weighted, reduction_axis)
    denom = red.sum(w, reduction_axis)
    nonzero = denom != 0
    return ew.where(nonzero, total / ew.where(nonzero, denom, 1.0), 0.0)


def reduce_loss(
    arr: NamedArray,
    reduction: Any = "mean",
    reduction_axis: Optional[AxisSelection] = None,
    *,
    where: Optional[NamedArray] = None,
    weight: Optional[NamedArray] = None,
) -> NamedArray:
    """Reduce a loss over ``reduction_axis`` (default: every axis; ``()``: none).

    ``reduction`` is ``"mean"`` (the default), ``"sum"``, ``None`` (no reduction) or a
    namax reduction function (``nx.mean``, ``nx.sum``, ``nx.max``, ...). ``weight`` (float)
    and ``where`` (bool) weight the entries; a weighted mean is
    ``sum(w * loss) / sum(w)`` with ``w = weight * where``, and is 0 where ``sum(w)`` is 0
    (Haliax's rule). Entries where ``where`` is False are left out (not multiplied by 0),
    so a NaN there does not reach the result. Without a reduction the weighted loss is
    returned.

    >>> import jax.numpy as jnp, namax as nx
    >>> B = nx.Axis("batch", 4)
    >>> loss = nx.arange(B, dtype=float)
    >>> reduce_loss(loss).array.item(), reduce_loss(loss, "sum").array.item()
    (1.5, 6.0)
    >>> reduce_loss(loss, where=nx.named(jnp.array([True, True, False, False]), B)).array.item()
    0.5
    """
    return maybe_reduce_loss(arr, reduction, reduction_axis, where, weight)


__all__ = [
    "one_hot", "cross_entropy_loss", "cross_entropy_loss_and_log_normalizers", "binary_cross_entropy_loss",
    "reduce_loss", "maybe_reduce_loss",
]
