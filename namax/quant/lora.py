"""LoRA: ``LoraWeight(w, a, b)`` stands for ``w + (alpha / r) a b^T`` and is never formed.

``w`` is ``[..., in, out]`` (as in ``x @ w``; leading stack dims allowed), ``a`` is
``[..., in, r]`` and ``b`` is ``[..., out, r]``. A ``dot_general`` with a LoraWeight on
either side, for any contracting and batch dimensions, becomes ``x w + ((x a) b^T) s``:
the activation stays the left operand, the rank-``r`` product is scaled, and ``a b^T``
is never built. Transposes give a LoraWeight of the transposed ``w``; any other use
materializes.

>>> import jax, jax.numpy as jnp
>>> import namax.quant as qax
>>> params = qax.lora.wrap({"w": jnp.ones((4, 3))}, rank=2, key=jax.random.key(0))
>>> qax.use_implicit_args(lambda p, x: x @ p["w"])(params, jnp.ones((1, 4))).tolist()
[[4.0, 4.0, 4.0]]
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.extend.core import primitives as P

from .handlers import default_handler, primitive_handler
from .implicit import ArrayValue, ImplicitArray, _has_aval, aux_field, materialize_value
from .utils import freeze_keys


@dataclasses.dataclass
class LoraWeight(ImplicitArray):
    """``w + (alpha / r) a b^T`` with ``w [..., in, out]``, ``a [..., in, r]``, ``b [..., out, r]``."""

    w: ArrayValue
    a: ArrayValue
    b: ArrayValue
    alpha: float = aux_field(default=1.0)

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
        return (materialize_value(self.w) + delta).astype(self.dtype)

    def child_names(self, names):
        """``w`` has the dense names; ``a`` keeps the input axis, ``b`` the output axis, rank unnamed."""
        from .implicit import leaf_names_of

        if names is None:
            return leaf_names_of(self.w, None) + [None, None]
        names = tuple(names)
        stack, n_in, n_out = names[:-2], names[-2], names[-1]
        return leaf_names_of(self.w, names) + [stack + (n_in, None), stack + (n_out, None)]


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
        main, main_labels = _dot_labels(x, x_labels, w.w, w_labels, set(target), inner)
        main = _permute(main, main_labels, target)
    else:
        main = default_handler(P.dot_general_p, x, w.w, dimension_numbers=dimension_numbers, **params)

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
    return LoraWeight(default_handler(primitive, w.w, permutation=perm), a, b, alpha=w.alpha)


# -- helpers ----------------------------------------------------------------------------

def _is_float_matrix(path: Any, leaf: Any) -> bool:
    return (isinstance(leaf, (jax.Array, np.ndarray)) and leaf.ndim == 2
            and jnp.issubdtype(leaf.dtype, jnp.floating))


def wrap(params: Any, rank: int, key: jax.Array, where: Optional[Callable[[Any, Any], bool]] = None,
         alpha: float = 1.0) -> Any:
    """``params`` with its 2-D float arrays (or those ``where(path, leaf)`` selects) as LoraWeights.

    ``a ~ N(0, 1/in)`` and ``b = 0``, so the wrapped model computes what it did before.

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
        out.append(LoraWeight(leaf, a, b, alpha=alpha))
    return jax.tree_util.tree_unflatten(treedef, out)


def merge(params: Any) -> Any:
    """``params`` with every LoraWeight folded into a dense array ``w + (alpha/r) a b^T``."""
    return jax.tree_util.tree_map(lambda x: x.materialize() if isinstance(x, LoraWeight) else x, params,
                                  is_leaf=lambda x: isinstance(x, LoraWeight))


def optimizer(opt: optax.GradientTransformation) -> optax.GradientTransformation:
    """``opt`` training only the LoRA factors ``a`` and ``b`` (every ``w`` is frozen)."""
    return freeze_keys(opt, LoraWeight, ["w"])


def factors(params: Any) -> list[LoraWeight]:
    """The LoraWeights in ``params``, in tree order."""
    return [x for x in jax.tree_util.tree_leaves(params, is_leaf=lambda x: isinstance(x, LoraWeight))
            if isinstance(x, LoraWeight)]


__all__: Sequence[str] = ["LoraWeight", "factors", "merge", "optimizer", "wrap"]
