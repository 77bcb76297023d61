"""LoRA: ``LoraWeight(w, a, b)`` stands for ``w + (alpha / r) a b^T`` and is never formed.

``w`` is ``[..., in, out]`` (as in ``x @ w``; leading stack dims allowed), ``a`` is
``[..., in, r]`` and ``b`` is ``[..., out, r]``. A ``dot_general`` with a LoraWeight on
either side, for any contracting and batch dimensions, becomes ``x w + ((x a) b^T) s``:
the activation stays the left operand, the rank-``r`` product is scaled, and ``a b^T``
is never built. A ``gather`` (an embedding lookup ``table[ids]``, ``jnp.take``) gathers
``w`` and the factors and adds ``s (rows of a) b^T`` for the gathered entries only.
Transposes give a LoraWeight of the transposed ``w``; so do, with ``w`` and ``b`` scaled,
a product with or a division by one value (``t * 2``, ``-t``), and, with every part cast,
a float cast (``t.astype(jnp.bfloat16)``). A ``reduce_sum`` is computed from the factors.
Any other use materializes.

>>> import jax, jax.numpy as jnp
>>> import namax.quant as qax
>>> params = qax.lora.wrap({"w": jnp.ones((4, 3))}, rank=2, key=jax.random.key(0))
>>> qax.use_implicit_args(lambda p, x: x @ p["w"])(params, jnp.ones((1, 4))).tolist()
[[4.0, 4.0, 4.0]]
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.extend.core import primitives as P

from .handlers import default_handler, primitive_handler
from .implicit import ArrayValue, ImplicitArray, _has_aval, _split, aux_field, materialize_value


@dataclasses.dataclass
class LoraWeight(ImplicitArray):
    """``w + (alpha / r) a b^T`` with ``w [..., in, out]``, ``a [..., in, r]``, ``b [..., out, r]``.

    >>> import jax.numpy as jnp
    >>> lw = LoraWeight(jnp.zeros((4, 3)), jnp.ones((4, 2)), jnp.ones((3, 2)), alpha=2.0)
    >>> lw.shape, lw.rank, lw.scale, lw.materialize()[0].tolist()
    ((4, 3), 2, 1.0, [2.0, 2.0, 2.0])

    ``w`` is frozen: every use of it goes through ``jax.lax.stop_gradient``, so a gradient
    with respect to a LoraWeight has a zero ``w`` part and XLA never computes the
    full-weight gradient. ``train_w=True`` keeps that gradient for whoever wants it.
    """

    w: ArrayValue
    a: ArrayValue
    b: ArrayValue
    alpha: float = aux_field(default=1.0)
    train_w: bool = aux_field(default=False)

    def __post_init__(self) -> None:
        _validate(self.w, self.a, self.b, self.alpha)
        super().__post_init__()
        if tuple(self.shape) != tuple(self.w.shape) or self.dtype != jnp.dtype(self.w.dtype):
            raise ValueError(f"LoraWeight: shape={self.shape}, dtype={self.dtype} disagree with "
                             f"w of shape {tuple(self.w.shape)} and dtype {self.w.dtype}")

    @property
    def rank(self) -> int:
        return int(self.a.shape[-1])

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank

    def compute_shape_dtype(self) -> tuple[tuple, Any]:
        return tuple(self.w.shape), jnp.dtype(self.w.dtype)

    def materialize(self) -> jax.Array:
        a, b = materialize_value(self.a), materialize_value(self.b)
        delta = jnp.matmul(a, jnp.swapaxes(b, -1, -2)) * self.scale
        return (materialize_value(main_weight(self)) + delta).astype(self.dtype)

    def child_names(self, names):
        """``w`` has the dense names; ``a`` keeps the input axis, ``b`` the output axis, rank unnamed."""
        from .implicit import leaf_names_of

        if names is None:
            return leaf_names_of(self.w, None) + [None, None]
        names = tuple(names)
        stack, n_in, n_out = names[:-2], names[-2], names[-1]
        return leaf_names_of(self.w, names) + [stack + (n_in, None), stack + (n_out, None)]


def main_weight(w: LoraWeight) -> Any:
    """``w.w`` as every handler uses it: without a gradient unless ``w.train_w``.

    >>> import jax, jax.numpy as jnp
    >>> lw = LoraWeight(jnp.ones((2, 2)), jnp.ones((2, 1)), jnp.ones((2, 1)))
    >>> jax.grad(lambda lw: main_weight(lw).sum())(lw).w.tolist()
    [[0.0, 0.0], [0.0, 0.0]]
    """
    return w.w if w.train_w else jax.lax.stop_gradient(w.w)


def _like(w: LoraWeight, main: Any, a: Any, b: Any, alpha: Optional[float] = None) -> LoraWeight:
    """A LoraWeight derived from ``w`` (same ``alpha`` unless given, same ``train_w``)."""
    return LoraWeight(main, a, b, alpha=w.alpha if alpha is None else alpha, train_w=w.train_w)


def _validate(w: Any, a: Any, b: Any, alpha: Any) -> None:
    for name, v in (("w", w), ("a", a), ("b", b)):
        if not _has_aval(v):
            raise TypeError(f"LoraWeight.{name} must be an array, got {type(v).__name__}")
    if len(w.shape) < 2:
        raise ValueError(f"LoraWeight.w must have at least 2 dims [..., in, out], got shape {tuple(w.shape)}")
    lead, (n_in, n_out) = tuple(w.shape[:-2]), tuple(w.shape[-2:])
    if len(a.shape) != len(w.shape) or tuple(a.shape[:-2]) != lead or a.shape[-2] != n_in:
        raise ValueError(f"LoraWeight.a must have shape {lead + (n_in,)} + (rank,) for w of shape "
                         f"{tuple(w.shape)}, got {tuple(a.shape)}")
    if len(b.shape) != len(w.shape) or tuple(b.shape[:-2]) != lead or b.shape[-2] != n_out:
        raise ValueError(f"LoraWeight.b must have shape {lead + (n_out,)} + (rank,) for w of shape "
                         f"{tuple(w.shape)}, got {tuple(b.shape)}")
    r = a.shape[-1]
    if b.shape[-1] != r:
        raise ValueError(f"LoraWeight: a has rank {r} but b has rank {b.shape[-1]}")
    if not 1 <= r <= min(n_in, n_out):
        raise ValueError(f"LoraWeight: rank {r} does not fit a weight of shape {tuple(w.shape)} "
                         f"(need 1 <= rank <= {min(n_in, n_out)})")
    dtypes = {jnp.dtype(v.dtype) for v in (w, a, b)}
    if len(dtypes) != 1:
        raise TypeError(f"LoraWeight: w, a, b must share a dtype, got {w.dtype}, {a.dtype}, {b.dtype}")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise TypeError(f"LoraWeight.alpha must be a Python number, got {alpha!r}")


# -- dot_general ------------------------------------------------------------------------

def _dot_labels(lhs: Any, lhs_labels: list, rhs: Any, rhs_labels: list, keep: set, params: dict):
    """Einsum-like dot_general by dim labels: shared labels in ``keep`` batch, others contract."""
    shared = [l for l in lhs_labels if l in rhs_labels]
    batch = [l for l in shared if l in keep]
    contract = [l for l in shared if l not in keep]
    dn = ((tuple(lhs_labels.index(l) for l in contract), tuple(rhs_labels.index(l) for l in contract)),
          (tuple(lhs_labels.index(l) for l in batch), tuple(rhs_labels.index(l) for l in batch)))
    out = default_handler(P.dot_general_p, lhs, rhs, dimension_numbers=dn, **params)
    labels = batch + [l for l in lhs_labels if l not in shared] + [l for l in rhs_labels if l not in shared]
    return out, labels


def _permute(x: Any, labels: list, target: list) -> Any:
    perm = tuple(labels.index(l) for l in target)
    if perm == tuple(range(len(perm))):
        return x
    return default_handler(P.transpose_p, x, permutation=perm)


def _lora_dot(x: Any, w: LoraWeight, dimension_numbers: Any, weight_on_left: bool, params: dict) -> Any:
    (lc, rc), (lb, rb) = dimension_numbers
    xc, wc, xb, wb = (rc, lc, rb, lb) if weight_on_left else (lc, rc, lb, rb)
    precision = params.get("precision")
    if weight_on_left and isinstance(precision, tuple):
        precision = precision[::-1]
    inner = {"precision": precision, "preferred_element_type": params.get("preferred_element_type")}
    if "out_sharding" in params:
        inner["out_sharding"] = None
    x_labels = [("x", k) for k in range(x.ndim)]
    w_labels = [("w", k) for k in range(w.ndim)]
    for i, j in zip((*xc, *xb), (*wc, *wb)):
        w_labels[j] = x_labels[i]
    x_free = [l for k, l in enumerate(x_labels) if k not in xc and k not in xb]
    w_free = [l for k, l in enumerate(w_labels) if k not in wc and k not in wb]
    batch = [x_labels[k] for k in xb]
    target = batch + (w_free + x_free if weight_on_left else x_free + w_free)

    if weight_on_left:
        main, main_labels = _dot_labels(x, x_labels, main_weight(w), w_labels, set(target), inner)
        main = _permute(main, main_labels, target)
    else:
        main = default_handler(P.dot_general_p, x, main_weight(w), dimension_numbers=dimension_numbers, **params)

    stack, r = w_labels[:-2], ("lora_rank",)
    a_factor = (w.a, stack + [w_labels[-2], r])
    b_factor = (w.b, stack + [w_labels[-1], r])
    paired = lambda k: k in wc or k in wb  # noqa: E731
    # Contract x with the factor that shares its contracted dim first, so x a (or x b) is small.
    first, second = (b_factor, a_factor) if paired(w.ndim - 1) and not paired(w.ndim - 2) else (a_factor, b_factor)
    t, t_labels = _dot_labels(x, x_labels, first[0], first[1], set(target) | set(second[1]), inner)
    t = default_handler(P.mul_p, t, np.asarray(w.scale, dtype=t.dtype), out_dtype=None)
    u, u_labels = _dot_labels(t, t_labels, second[0], second[1], set(target), inner)
    u = _permute(u, u_labels, target)
    if u.dtype != main.dtype:
        u = default_handler(P.convert_element_type_p, u, new_dtype=main.dtype, weak_type=False, sharding=None)
    return default_handler(P.add_p, main, u)


@primitive_handler("dot_general")
def _dot_weight_right(primitive, x, w: LoraWeight, *, dimension_numbers, **params):
    return _lora_dot(x, w, dimension_numbers, weight_on_left=False, params=params)


@primitive_handler("dot_general")
def _dot_weight_left(primitive, w: LoraWeight, x, *, dimension_numbers, **params):
    return _lora_dot(x, w, dimension_numbers, weight_on_left=True, params=params)


@primitive_handler("transpose")
def _transpose(primitive, w: LoraWeight, *, permutation):
    n, perm = w.ndim, tuple(permutation)
    if sorted(perm[-2:]) != [n - 2, n - 1]:
        return NotImplemented
    child_perm = perm[:-2] + (n - 2, n - 1)
    moved = (lambda v: v) if child_perm == tuple(range(n)) else (
        lambda v: default_handler(primitive, v, permutation=child_perm))
    a, b = moved(w.a), moved(w.b)
    if perm[-2:] == (n - 1, n - 2):
        a, b = b, a
    return _like(w, default_handler(primitive, main_weight(w), permutation=perm), a, b)


# -- gather, dynamic_slice, squeeze -----------------------------------------------------

def _add_low_rank(main: Any, w: LoraWeight, a: Any, a_labels: list, b: Any, b_labels: list, target: list) -> Any:
    """``main + s a b^T`` for factor pieces labelled by dim, contracted on ``"rank"``, in ``target`` order."""
    scale = lambda v: default_handler(P.mul_p, v, np.asarray(w.scale, dtype=v.dtype), out_dtype=None)  # noqa: E731
    a, b = (scale(a), b) if a.size <= b.size else (a, scale(b))
    inner = {"precision": None, "preferred_element_type": None, "out_sharding": None}
    u, u_labels = _dot_labels(a, a_labels, b, b_labels, set(target), inner)
    u = _permute(u, u_labels, target)
    if u.dtype != main.dtype:
        u = default_handler(P.convert_element_type_p, u, new_dtype=main.dtype, weak_type=False, sharding=None)
    return default_handler(P.add_p, main, u)


def _gather_out_labels(ndim: int, dn: Any, n_batch: int) -> list:
    """Labels of a gather's output dims: ``("batch", j)`` for index batch dim ``j``, else
    ``("op", d)`` for the operand dim ``d`` it slices."""
    offsets = iter([("op", d) for d in range(ndim)
                    if d not in dn.collapsed_slice_dims and d not in dn.operand_batching_dims])
    batch = iter([("batch", j) for j in range(n_batch)])
    return [next(offsets) if i in dn.offset_dims else next(batch) for i in range(n_batch + len(dn.offset_dims))]


def _index_columns(indices: Any, keep: list) -> Any:
    """``indices[..., keep]`` (the index vector is the last dim of a gather's indices)."""
    axis = indices.ndim - 1
    if keep == list(range(indices.shape[axis])):
        return indices
    cols = [jax.lax.slice_in_dim(indices, k, k + 1, axis=axis) for k in keep]
    return jax.lax.concatenate(cols, axis) if cols else jax.lax.slice_in_dim(indices, 0, 0, axis=axis)


def _gather_factor(f: Any, own: int, ndim: int, indices: Any, params: dict, force: bool) -> tuple:
    """The factor ``f`` (``a`` with ``own = in``, ``b`` with ``own = out``) gathered like ``w``.

    ``w``'s gather restricted to the dims ``f`` shares with it (the stack dims and ``own``;
    the rank dim is taken whole). Returns ``(value, labels)``, labels as in
    :func:`_gather_out_labels` plus ``"rank"``. Without index components or batching dims on
    those dims (and unless ``force``), ``f`` is only sliced statically, with no index dims.
    Out-of-bounds slices (``mode=fill``) are zero, so they add nothing to ``w``'s fill value.
    """
    dn, sizes = params["dimension_numbers"], params["slice_sizes"]
    to_f = {**{d: d for d in range(ndim - 2)}, own: ndim - 2}  # w dim -> f dim; f's last dim is the rank
    keep = [k for k, d in enumerate(dn.start_index_map) if d in to_f]
    batching = [(to_f[d], j) for d, j in zip(dn.operand_batching_dims, dn.start_indices_batching_dims) if d in to_f]
    collapsed = tuple(to_f[d] for d in dn.collapsed_slice_dims if d in to_f)
    f_sizes = tuple(sizes[d] for d in sorted(to_f, key=to_f.get)) + (f.shape[-1],)
    w_dim = {v: k for k, v in to_f.items()}
    dropped = set(collapsed) | {d for d, _ in batching}
    labels = [("op", w_dim[d]) for d in range(ndim - 1) if d not in dropped] + ["rank"]
    if not keep and not batching and not force:
        if f_sizes != tuple(f.shape):
            f = default_handler(P.slice_p, f, start_indices=(0,) * ndim, limit_indices=f_sizes, strides=None)
        if collapsed:
            f = default_handler(P.squeeze_p, f, dimensions=collapsed)
        return f, labels
    n_batch = indices.ndim - 1
    fdn = jax.lax.GatherDimensionNumbers(
        offset_dims=tuple(range(n_batch, n_batch + ndim - len(dropped))), collapsed_slice_dims=collapsed,
        start_index_map=tuple(to_f[dn.start_index_map[k]] for k in keep),
        operand_batching_dims=tuple(d for d, _ in batching), start_indices_batching_dims=tuple(j for _, j in batching))
    whole = len(keep) == len(dn.start_index_map)  # same index vectors: sortedness and uniqueness carry over
    fill = params["mode"] == jax.lax.GatherScatterMode.FILL_OR_DROP
    out = default_handler(P.gather_p, f, _index_columns(indices, keep), dimension_numbers=fdn, slice_sizes=f_sizes,
                          indices_are_sorted=bool(params["indices_are_sorted"]) and whole,
                          unique_indices=bool(params["unique_indices"]) and whole, mode=params["mode"],
                          fill_value=0 if fill else None)
    return out, [("batch", j) for j in range(n_batch)] + labels


@primitive_handler("gather")
def _gather(primitive, w: LoraWeight, indices: jax.Array, **params):
    """``gather(w) + s gather(a) gather(b)^T``: only the gathered entries of ``a b^T`` are formed.

    Any gather form works (rows as in ``table[ids]``, columns, single entries, stack dims
    indexed or vmapped); each factor is gathered on the dims it shares with ``w``.

    >>> import jax, jax.numpy as jnp
    >>> import namax.quant as qax
    >>> t = LoraWeight(jnp.zeros((5, 3)), jnp.arange(10.0).reshape(5, 2), jnp.ones((3, 2)), alpha=2.0)
    >>> qax.use_implicit_args(lambda t, ids: t[ids])(t, jnp.array([[4, 0]])).tolist()
    [[[17.0, 17.0, 17.0], [1.0, 1.0, 1.0]]]
    """
    main = default_handler(primitive, main_weight(w), indices, **params)
    n, n_batch = w.ndim, indices.ndim - 1
    a, a_labels = _gather_factor(w.a, n - 2, n, indices, params, force=False)
    # a gather with no index components still has the index batch dims: then b carries them
    force_b = n_batch > 0 and ("batch", 0) not in a_labels
    b, b_labels = _gather_factor(w.b, n - 1, n, indices, params, force=force_b)
    target = _gather_out_labels(n, params["dimension_numbers"], n_batch)
    return _add_low_rank(main, w, a, a_labels, b, b_labels, target)


@primitive_handler("dynamic_slice")
def _dynamic_slice(primitive, w: LoraWeight, *starts: jax.Array, slice_sizes):
    """A block of ``W`` (``table[i]`` for a scalar ``i``, ``ws[i]`` for stacked weights).

    A block with whole ``in`` and ``out`` dims is the LoraWeight of the sliced ``w``, ``a``
    and ``b``; any other block is dense, ``w[blk] + s a[rows] b[cols]^T``, formed for the
    block only. Starts are clamped per dim as for ``w``, so the factors stay aligned.

    >>> import jax.numpy as jnp
    >>> import namax.quant as qax
    >>> t = LoraWeight(jnp.zeros((5, 3)), jnp.arange(10.0).reshape(5, 2), jnp.ones((3, 2)))
    >>> qax.use_implicit_args(lambda t, i: t[i])(t, jnp.array(4)).tolist()
    [8.5, 8.5, 8.5]
    """
    sizes, stack_starts = tuple(slice_sizes), tuple(starts[:-2])

    def factor(f: Any, own: int) -> Any:  # own = -2 (a: rows of W) or -1 (b: columns of W)
        zero = np.zeros((), dtype=jnp.result_type(starts[own]))
        return default_handler(primitive, f, *stack_starts, starts[own], zero,
                               slice_sizes=sizes[:-2] + (sizes[own], w.rank))

    main, a, b = default_handler(primitive, main_weight(w), *starts, slice_sizes=sizes), factor(w.a, -2), factor(w.b, -1)
    if sizes[-2:] == tuple(w.shape[-2:]):
        return _like(w, main, a, b)
    stack = [("stack", d) for d in range(w.ndim - 2)]
    return _add_low_rank(main, w, a, stack + ["in", "rank"], b, stack + ["out", "rank"], stack + ["in", "out"])


@primitive_handler("squeeze")
def _squeeze(primitive, w: LoraWeight, *, dimensions):
    """Dropping size-1 stack dims keeps the weight factored (``ws[i]`` of stacked weights)."""
    dims = tuple(d % w.ndim for d in dimensions)
    if any(d >= w.ndim - 2 for d in dims):
        return NotImplemented
    a, b, main = (default_handler(primitive, v, dimensions=dims) for v in (w.a, w.b, main_weight(w)))
    return _like(w, main, a, b)


# -- scalar arithmetic, dtype casts, sums -----------------------------------------------

def _one_value(c: Any, w: LoraWeight) -> Optional[Any]:
    """``c`` as a 0-d operand if it is one value that leaves ``w``'s shape unchanged
    (a Python or 0-d scalar, or a size-1 array of at most ``w.ndim`` dims), else None."""
    shape = tuple(np.shape(c))
    if math.prod(shape) != 1 or len(shape) > w.ndim:
        return None
    return c if not shape else jnp.reshape(c, ())


def _linear_in_w_and_b(w: LoraWeight, fn: Callable[[Any], Any]) -> LoraWeight:
    """``fn(w) + s a fn(b)^T``, i.e. ``fn(W)`` for an ``fn`` that scales every entry alike."""
    return _like(w, fn(main_weight(w)), w.a, fn(w.b))


@primitive_handler("mul")
def _mul(primitive, w: LoraWeight, c: jax.Array, **params):
    """``W c`` for one value ``c`` (``t * 2``, ``scale * t``): ``(w c) + s a (b c)^T``, still factored.

    Float weights only; any other operand (a row or column of scales, a full array) materializes.

    >>> import jax.numpy as jnp
    >>> import namax.quant as qax
    >>> t = LoraWeight(jnp.zeros((4, 3)), jnp.ones((4, 2)), jnp.ones((3, 2)), alpha=2.0)
    >>> d = qax.use_implicit_args(lambda t: t * 3)(t)
    >>> type(d).__name__, d.materialize()[0].tolist()
    ('LoraWeight', [6.0, 6.0, 6.0])
    """
    c = _one_value(c, w)
    if c is None or not jnp.issubdtype(w.dtype, jnp.inexact):
        return NotImplemented
    return _linear_in_w_and_b(w, lambda v: default_handler(primitive, v, c, **params))


@primitive_handler("div")
def _div(primitive, w: LoraWeight, c: jax.Array, **params):
    """``W / c`` for one value ``c``: ``(w / c) + s a (b / c)^T``. ``c / W`` materializes.

    >>> import jax.numpy as jnp
    >>> import namax.quant as qax
    >>> t = LoraWeight(jnp.zeros((4, 3)), jnp.ones((4, 2)), jnp.ones((3, 2)), alpha=2.0)
    >>> qax.use_implicit_args(lambda t: t / 4)(t).materialize()[0].tolist()
    [0.5, 0.5, 0.5]
    """
    c = _one_value(c, w)
    if c is None or not jnp.issubdtype(w.dtype, jnp.inexact):
        return NotImplemented
    return _linear_in_w_and_b(w, lambda v: default_handler(primitive, v, c, **params))


@primitive_handler("neg")
def _neg(primitive, w: LoraWeight, **params):
    """``-W = (-w) + s a (-b)^T``.

    >>> import jax.numpy as jnp
    >>> import namax.quant as qax
    >>> t = LoraWeight(jnp.ones((4, 3)), jnp.ones((4, 2)), jnp.ones((3, 2)), alpha=2.0)
    >>> qax.use_implicit_args(lambda t: -t)(t).materialize()[0].tolist()
    [-3.0, -3.0, -3.0]
    """
    if not jnp.issubdtype(w.dtype, jnp.inexact):
        return NotImplemented
    return _linear_in_w_and_b(w, lambda v: default_handler(primitive, v, **params))


def _value_preserving_cast(src: Any, dst: Any) -> bool:
    """Whether casting ``src`` to ``dst`` commutes with ``w + s a b^T`` up to rounding:
    float or complex to float or complex, never dropping an imaginary part."""
    src, dst = jnp.dtype(src), jnp.dtype(dst)
    return (jnp.issubdtype(src, jnp.inexact) and jnp.issubdtype(dst, jnp.inexact)
            and not (jnp.issubdtype(src, jnp.complexfloating) and not jnp.issubdtype(dst, jnp.complexfloating)))


@primitive_handler("convert_element_type")
def _convert(primitive, w: LoraWeight, *, new_dtype, weak_type, sharding=None):
    """A float cast (``t.astype(jnp.bfloat16)``) casts ``w``, ``a`` and ``b`` alike (same
    ``new_dtype`` and ``weak_type``); ``alpha`` is kept. The low-rank term is then formed
    in the new dtype, as for a model whose LoRA parameters are cast. Casts to integer or
    bool, and casts with an output ``sharding``, materialize.

    >>> import jax.numpy as jnp
    >>> import namax.quant as qax
    >>> t = LoraWeight(jnp.zeros((4, 3)), jnp.ones((4, 2)), jnp.ones((3, 2)), alpha=2.0)
    >>> c = qax.use_implicit_args(lambda t: t.astype(jnp.bfloat16))(t)
    >>> type(c).__name__, c.dtype, c.a.dtype, c.alpha
    ('LoraWeight', dtype(bfloat16), dtype(bfloat16), 2.0)
    """
    if sharding is not None or not _value_preserving_cast(w.dtype, new_dtype):
        return NotImplemented
    parts = (default_handler(primitive, v, new_dtype=new_dtype, weak_type=weak_type, sharding=None)
             for v in (main_weight(w), w.a, w.b))
    return _like(w, *parts)


def _fold_into_rank(f: Any, reduced: Sequence[int], keep_dims: int) -> Any:
    """``f [*stack, n, r]`` with the ``reduced`` stack dims moved in front of the rank dim
    and merged with it: ``[*kept stack, n, prod(reduced) * r]``."""
    n = f.ndim
    kept = [d for d in range(n - 2) if d not in reduced]
    perm = tuple(kept) + (n - 2,) + tuple(reduced) + (n - 1,)
    if perm != tuple(range(n)):
        f = default_handler(P.transpose_p, f, permutation=perm)
    shape = tuple(f.shape[:keep_dims + 1]) + (math.prod(f.shape[keep_dims + 1:]),)
    return default_handler(P.reshape_p, f, new_sizes=shape, dimensions=None, sharding=None)


@primitive_handler("reduce_sum")
def _reduce_sum(primitive, w: LoraWeight, *, axes, **params):
    """``sum(W)`` over ``axes`` from the factors: ``sum(w) + s sum(a b^T)``, with ``a b^T`` never formed.

    Summing over ``in`` (``out``) sums ``a`` (``b``) over it first; the rank dim and the
    summed stack dims are then contracted in one small dot (``jnp.sum(t)`` is
    ``(sum_i a) . (sum_o b)``, ``t.sum(0)`` is ``(sum_i a) b^T``). A sum over stack dims
    only keeps the weight factored: ``sum_l a_l b_l^T`` is a LoraWeight whose rank holds
    the summed stack entries (``a``, ``b`` of rank ``prod(summed dims) * r``, ``alpha``
    scaled to keep ``s``), while that rank fits the matrix; else it is formed densely.

    >>> import jax.numpy as jnp
    >>> import namax.quant as qax
    >>> t = LoraWeight(jnp.zeros((4, 3)), jnp.ones((4, 2)), jnp.arange(6.0).reshape(3, 2), alpha=2.0)
    >>> qax.use_implicit_args(lambda t: (t.sum(), t.sum(0)))(t)[1].tolist()
    [4.0, 20.0, 36.0]
    """
    n = w.ndim
    axes = tuple(sorted(int(d) % n for d in axes))
    if not axes:
        return w
    inner = {**params, "out_sharding": None} if "out_sharding" in params else dict(params)
    main = default_handler(primitive, main_weight(w), axes=axes, **params)
    stacked = [d for d in axes if d < n - 2]
    if n - 2 not in axes and n - 1 not in axes:
        r = w.rank * math.prod(w.shape[d] for d in stacked)
        if r <= min(w.shape[-2:]):
            keep_dims = n - 2 - len(stacked)
            a, b = (_fold_into_rank(f, stacked, keep_dims) for f in (w.a, w.b))
            return _like(w, main, a, b, alpha=w.alpha * (r // w.rank))
    stack = [("stack", d) for d in range(n - 2)]

    def factor(f: Any, own: int, label: str) -> tuple:
        if own in axes:
            return default_handler(primitive, f, axes=(n - 2,), **inner), stack + ["rank"]
        return f, stack + [label, "rank"]

    a, a_labels = factor(w.a, n - 2, "in")
    b, b_labels = factor(w.b, n - 1, "out")
    target = [label for d, label in enumerate(stack + ["in", "out"]) if d not in axes]
    return _add_low_rank(main, w, a, a_labels, b, b_labels, target)


# -- helpers ----------------------------------------------------------------------------

def _is_float_matrix(path: Any, leaf: Any) -> bool:
    return (isinstance(leaf, (jax.Array, np.ndarray)) and leaf.ndim == 2
            and jnp.issubdtype(leaf.dtype, jnp.floating))


def wrap(params: Any, rank: int, key: jax.Array, where: Optional[Callable[[Any, Any], bool]] = None,
         alpha: float = 1.0, train_w: bool = False) -> Any:
    """``params`` with its 2-D float arrays (or those ``where(path, leaf)`` selects) as LoraWeights.

    ``a ~ N(0, 1/in)`` and ``b = 0``, so the wrapped model computes what it did before.
    The base weights are frozen (no gradient) unless ``train_w=True``.

    >>> import jax, jax.numpy as jnp
    >>> p = wrap({"w": jnp.ones((4, 3)), "bias": jnp.ones(3)}, rank=2, key=jax.random.key(0))
    >>> type(p["w"]).__name__, p["w"].a.shape, p["w"].b.shape
    ('LoraWeight', (4, 2), (3, 2))
    """
    where = where or _is_float_matrix
    is_lora = lambda x: isinstance(x, LoraWeight)  # noqa: E731
    flat, treedef = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_lora)
    out = []
    for i, (path, leaf) in enumerate(flat):
        if is_lora(leaf) or not where(path, leaf):
            out.append(leaf)
            continue
        if not _has_aval(leaf) or len(leaf.shape) < 2:
            raise ValueError(f"lora.wrap: leaf at {jax.tree_util.keystr(path)} is not an array with >= 2 dims")
        *lead, n_in, n_out = leaf.shape
        if not 1 <= rank <= min(n_in, n_out):
            raise ValueError(f"lora.wrap: rank {rank} does not fit the weight at {jax.tree_util.keystr(path)} "
                             f"of shape {tuple(leaf.shape)}")
        k = jax.random.fold_in(key, i)
        a = (jax.random.normal(k, (*lead, n_in, rank), jnp.float32) / math.sqrt(n_in)).astype(leaf.dtype)
        b = jnp.zeros((*lead, n_out, rank), leaf.dtype)
        out.append(LoraWeight(leaf, a, b, alpha=alpha, train_w=train_w))
    return jax.tree_util.tree_unflatten(treedef, out)


def merge(params: Any) -> Any:
    """``params`` with every LoraWeight folded into a dense array ``w + (alpha/r) a b^T``.

    >>> import jax.numpy as jnp
    >>> p = {"w": LoraWeight(jnp.zeros((4, 3)), jnp.ones((4, 1)), jnp.ones((3, 1))), "bias": jnp.ones(3)}
    >>> merged = merge(p)
    >>> type(merged["w"]).__name__, merged["w"][0].tolist(), merged["bias"] is p["bias"]
    ('ArrayImpl', [1.0, 1.0, 1.0], True)
    """
    return jax.tree_util.tree_map(lambda x: x.materialize() if isinstance(x, LoraWeight) else x, params,
                                  is_leaf=lambda x: isinstance(x, LoraWeight))


_Trainable = Union[None, str, Sequence[str], Callable[[Any, Any], bool]]


def _key_name(key: Any) -> str:
    """The name of one ``jax.tree_util`` path entry: a dict key, attribute name or index."""
    for attr in ("name", "key", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _trainable_predicate(trainable: _Trainable) -> Callable[[Any, Any], bool]:
    """``trainable`` (None, key-name substrings or a predicate) as a checked predicate."""
    if trainable is None:
        return lambda path, leaf: False
    if isinstance(trainable, str):
        trainable = (trainable,)
    if callable(trainable):
        fn = trainable

        def checked(path: Any, leaf: Any) -> bool:
            out = fn(path, leaf)
            if not isinstance(out, (bool, np.bool_)):
                raise TypeError(f"lora.optimizer: trainable(path, leaf) must return a Python bool, got "
                                f"{type(out).__name__} at {jax.tree_util.keystr(path)}; decide from the path, "
                                f"shape and dtype, not from array values")
            return bool(out)

        return checked
    if not isinstance(trainable, Sequence) or not all(isinstance(n, str) for n in trainable):
        raise TypeError(f"lora.optimizer: trainable must be a predicate (path, leaf) -> bool or a sequence of "
                        f"key-name substrings such as ('bias',), got {trainable!r}")
    names = tuple(trainable)
    if "" in names:
        raise ValueError("lora.optimizer: trainable contains an empty name, which would match every leaf")
    return lambda path, leaf: any(n in _key_name(k) for k in path for n in names)


def optimizer(opt: optax.GradientTransformation, trainable: _Trainable = None) -> optax.GradientTransformation:
    """``opt`` updating only the LoRA factors ``a`` and ``b`` (and the leaves ``trainable`` selects).

    Every other leaf gets a zero update and no optimizer state (``optax.multi_transform``
    with ``optax.set_to_zero``); the base weight ``w`` of a LoraWeight never trains.

    ``trainable`` also trains leaves outside the LoraWeights. It is either a predicate
    ``trainable(path, leaf) -> bool``, called with the ``jax.tree_util`` key path and the
    leaf (the parameter or, in ``update``, its gradient: decide from the path, shape and
    dtype), or key-name substrings such as ``("bias",)``: a leaf trains when one of them
    occurs in the name of a key on its path (a dict key, attribute name or index).

    >>> import jax, jax.numpy as jnp, optax
    >>> p = wrap({"w": jnp.ones((4, 3)), "bias": jnp.zeros(3)}, rank=2, key=jax.random.key(0))
    >>> g = jax.tree_util.tree_map(jnp.ones_like, p)
    >>> opt = optimizer(optax.sgd(1.0))
    >>> u, _ = opt.update(g, opt.init(p), p)
    >>> u["bias"].tolist(), u["w"].w.tolist()[0], u["w"].b.tolist()[0]
    ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-1.0, -1.0])
    >>> opt = optimizer(optax.sgd(1.0), trainable=("bias",))
    >>> opt.update(g, opt.init(p), p)[0]["bias"].tolist()
    [-1.0, -1.0, -1.0]
    """
    if not isinstance(opt, optax.GradientTransformation):
        raise TypeError(f"lora.optimizer: opt must be an optax.GradientTransformation, got {type(opt).__name__}")
    is_trainable = _trainable_predicate(trainable)
    is_lora = lambda x: isinstance(x, LoraWeight)  # noqa: E731

    def label(path: Any, leaf: Any) -> Any:
        if not is_lora(leaf):
            return "train" if is_trainable(path, leaf) else "freeze"
        _, rebuild = _split(leaf)  # a LoraWeight of labels (no validation)
        return rebuild([jax.tree_util.tree_map(lambda _: tag, v) for v, tag in
                        ((leaf.w, "freeze"), (leaf.a, "train"), (leaf.b, "train"))])

    def labels(params: Any) -> Any:
        return jax.tree_util.tree_map_with_path(label, params, is_leaf=is_lora)

    return optax.multi_transform({"train": opt, "freeze": optax.set_to_zero()}, labels)


def factors(params: Any) -> list[LoraWeight]:
    """The LoraWeights in ``params``, in tree order.

    >>> import jax, jax.numpy as jnp
    >>> p = wrap({"w1": jnp.ones((4, 3)), "w2": jnp.ones((3, 2)), "bias": jnp.ones(3)}, rank=2, key=jax.random.key(0))
    >>> [w.shape for w in factors(p)]
    [(4, 3), (3, 2)]
    """
    return [x for x in jax.tree_util.tree_leaves(params, is_leaf=lambda x: isinstance(x, LoraWeight))
            if isinstance(x, LoraWeight)]


__all__: Sequence[str] = ["LoraWeight", "factors", "merge", "optimizer", "wrap"]
