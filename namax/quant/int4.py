"""int4 weights: ``Int4Weight`` holds 4-bit codes and per-group scales, never a dense copy.

A weight ``W [in, out]`` (as in ``x @ W``) is cut into groups of ``group_size`` rows along
``in``, the contraction dim. Each group and output column has one scale ``s`` (and, when
asymmetric, one integer zero point ``z``), and ``W[k, n] ~ (q[k, n] - z) * s`` with
``q`` in ``[-8, 7]``.

Storage: the codes are packed two per byte in a ``uint8 [in, out // 2]`` array (low
nibble = even column), scales are ``bfloat16 [in // group_size, out]`` and zero points are
packed like the codes. At group 128 that is 0.516 bytes per parameter (0.520 asymmetric).
Packed ``uint8`` rather than ``jnp.int4``: both take half a byte per code as a compiled
argument, but XLA:CPU converts an ``s4`` array that a loop reads into a full ``s8`` copy
(a temp of one byte per parameter), while ``uint8`` chunks are unpacked inside the loop.

A ``dot_general`` with an Int4Weight on either side becomes a dot with the dequantisation
inside the program, chunk by chunk (see :mod:`namax.quant.int4_dot`); transposes flip a
flag; other uses materialize.

>>> import jax, jax.numpy as jnp
>>> import namax.quant as qax
>>> w = jax.random.normal(jax.random.key(0), (256, 8))
>>> q = qax.int4.quantize({"w": w})["w"]
>>> q.shape, q.packed.dtype.name, q.scales.shape
((256, 8), 'uint8', (2, 8))
>>> bool(jnp.max(jnp.abs(q.materialize() - w)) < 0.5)
True
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .handlers import primitive_handler
from .implicit import ArrayValue, ImplicitArray, _has_aval, aux_field

DEFAULT_GROUP_SIZE = 128
"""Rows of the contraction dim that share one scale."""


def pack_int4(codes: Any) -> jax.Array:
    """``int [..., 2n]`` values in ``[-8, 7]`` -> ``uint8 [..., n]``, two per byte (low nibble first).

    >>> pack_int4(jnp.array([1, -2], jnp.int8)).tolist()
    [225]
    """
    codes = jnp.asarray(codes)
    if codes.ndim == 0 or codes.shape[-1] % 2:
        raise ValueError(f"pack_int4: the last dim must be even (two codes per byte), got shape {codes.shape}")
    u = codes.astype(jnp.int8).astype(jnp.uint8) & jnp.uint8(0xF)
    return u[..., 0::2] | (u[..., 1::2] << jnp.uint8(4))


def unpack_int4(packed: Any, dtype: Any = jnp.int8) -> jax.Array:
    """Inverse of :func:`pack_int4`: ``uint8 [..., n]`` -> ``dtype [..., 2n]`` values in ``[-8, 7]``.

    >>> unpack_int4(jnp.array([225], jnp.uint8)).tolist()
    [1, -2]
    """
    packed = jnp.asarray(packed)
    if packed.dtype != jnp.uint8:
        raise TypeError(f"unpack_int4 expects uint8, got {packed.dtype}")
    nibbles = lax.bitcast_convert_type(packed, jnp.int4)  # [..., n, 2], low nibble first
    return nibbles.reshape(*packed.shape[:-1], 2 * packed.shape[-1]).astype(dtype)


def dequantize_rows(packed: Any, scales: Any, zero_points: Optional[Any], group_size: int,
                    dtype: Any = jnp.float32) -> jax.Array:
    """Dense ``[rows, out]`` from packed codes ``[rows, out/2]`` and ``[rows/group_size, out]`` scales."""
    rows, n = packed.shape[0], 2 * packed.shape[1]
    g = rows // group_size
    q = unpack_int4(packed, jnp.float32).reshape(g, group_size, n)
    if zero_points is not None:
        q = q - unpack_int4(zero_points, jnp.float32)[:, None, :]
    w = q * scales.astype(jnp.float32)[:, None, :]
    return w.reshape(rows, n).astype(dtype)


@dataclasses.dataclass
class Int4Weight(ImplicitArray):
    """A 2-D weight as packed 4-bit codes, per-group scales and optional zero points.

    ``packed`` is ``uint8 [in, out // 2]``, ``scales`` is ``[in // group_size, out]``,
    ``zero_points`` (asymmetric) is ``uint8 [in // group_size, out // 2]`` or ``None``.
    The logical shape is ``(in, out)``, or ``(out, in)`` when ``transposed``; ``dtype``
    (keyword, default float32) is the dense weight's dtype.
    """

    packed: ArrayValue
    scales: ArrayValue
    zero_points: Optional[ArrayValue] = None
    group_size: int = aux_field(default=DEFAULT_GROUP_SIZE)
    transposed: bool = aux_field(default=False)

    def __post_init__(self) -> None:
        _validate(self)
        super().__post_init__()

    def compute_shape_dtype(self) -> tuple[tuple, Any]:
        k, n = int(self.packed.shape[0]), 2 * int(self.packed.shape[1])
        return ((n, k) if self.transposed else (k, n)), jnp.dtype(self.dtype or jnp.float32)

    @property
    def stored_shape(self) -> tuple[int, int]:
        """``(in, out)``: the shape of the dense weight in storage order (groups along dim 0)."""
        return int(self.packed.shape[0]), 2 * int(self.packed.shape[1])

    @property
    def symmetric(self) -> bool:
        return self.zero_points is None

    def materialize(self) -> jax.Array:
        w = dequantize_rows(self.packed, self.scales, self.zero_points, self.group_size, self.dtype)
        return w.T if self.transposed else w

    def __repr__(self) -> str:
        kind = "symmetric" if self.symmetric else "asymmetric"
        return f"Int4Weight({self.shape}, {jnp.dtype(self.dtype).name}, group_size={self.group_size}, {kind})"

    __str__ = __repr__


def _validate(w: Int4Weight) -> None:
    if not isinstance(w.group_size, (int, np.integer)) or isinstance(w.group_size, bool) or w.group_size < 1:
        raise ValueError(f"Int4Weight.group_size must be a positive int, got {w.group_size!r}")
    for name in ("packed", "scales"):
        if not _has_aval(getattr(w, name)):
            raise TypeError(f"Int4Weight.{name} must be an array, got {type(getattr(w, name)).__name__}")
    packed, scales, zp = w.packed, w.scales, w.zero_points
    if len(packed.shape) != 2 or jnp.dtype(packed.dtype) != jnp.uint8:
        raise TypeError(f"Int4Weight.packed must be uint8 [in, out // 2] (two codes per byte), "
                        f"got {jnp.dtype(packed.dtype).name}{list(packed.shape)}")
    k, n = int(packed.shape[0]), 2 * int(packed.shape[1])
    if k % w.group_size:
        raise ValueError(f"Int4Weight: group_size {w.group_size} does not divide the contraction dim ({k} rows)")
    want = (k // w.group_size, n)
    if tuple(scales.shape) != want or not jnp.issubdtype(scales.dtype, jnp.floating):
        raise ValueError(f"Int4Weight.scales must be a float array of shape {want} (one per group of "
                         f"{w.group_size} rows and output column), got {jnp.dtype(scales.dtype).name}"
                         f"{list(scales.shape)}")
    if zp is not None:
        if not _has_aval(zp) or tuple(zp.shape) != (want[0], n // 2) or jnp.dtype(zp.dtype) != jnp.uint8:
            raise ValueError(f"Int4Weight.zero_points must be packed uint8 of shape {(want[0], n // 2)}, got "
                             f"{getattr(zp, 'dtype', type(zp).__name__)}{list(getattr(zp, 'shape', ()))}")
    expected = (n, k) if w.transposed else (k, n)
    if w.shape is not None and tuple(w.shape) != expected:
        raise ValueError(f"Int4Weight: shape={tuple(w.shape)} disagrees with the packed codes ({expected})")


# -- quantize / dequantize -------------------------------------------------------------------

def quantize_array(w: Any, group_size: int = DEFAULT_GROUP_SIZE, symmetric: bool = True, in_axis: int = 0,
                   scale_dtype: Any = jnp.bfloat16) -> Int4Weight:
    """One 2-D float array as an :class:`Int4Weight`, grouped along ``in_axis`` (the contraction dim).

    >>> q = quantize_array(jnp.ones((128, 4)))
    >>> q.materialize().tolist()[0]
    [1.0, 1.0, 1.0, 1.0]
    """
    if not _has_aval(w):
        raise TypeError(f"int4.quantize: expected an array, got {type(w).__name__}")
    w = jnp.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"int4.quantize: only 2-D weights can be quantized, got shape {tuple(w.shape)} "
                         f"(a bias or a stacked weight was selected?)")
    if not jnp.issubdtype(w.dtype, jnp.floating):
        raise TypeError(f"int4.quantize: expected a float weight, got {w.dtype}")
    if in_axis not in (0, 1, -1, -2):
        raise ValueError(f"int4.quantize: in_axis must be 0 or 1 for a 2-D weight, got {in_axis}")
    transposed = in_axis % 2 == 1
    stored = w.T if transposed else w
    k, n = stored.shape
    if not isinstance(group_size, int) or group_size < 1 or k % group_size:
        raise ValueError(f"int4.quantize: group_size {group_size} does not divide the contraction dim "
                         f"(axis {in_axis % 2} of size {k}) of the weight of shape {tuple(w.shape)}")
    if n % 2:
        raise ValueError(f"int4.quantize: the output dim (size {n}) of the weight of shape {tuple(w.shape)} "
                         f"must be even: codes are packed two per byte along it")
    groups = stored.astype(jnp.float32).reshape(k // group_size, group_size, n)
    if symmetric:
        amax = jnp.max(jnp.abs(groups), axis=1)
        scales = jnp.where(amax > 0, amax / 7.0, 1.0).astype(scale_dtype)
        s = scales.astype(jnp.float32)[:, None, :]
        codes = jnp.clip(jnp.round(groups / s), -8, 7)
        zero_points = None
    else:
        lo = jnp.minimum(jnp.min(groups, axis=1), 0.0)
        hi = jnp.maximum(jnp.max(groups, axis=1), 0.0)
        scales = jnp.where(hi > lo, (hi - lo) / 15.0, 1.0).astype(scale_dtype)
        s = scales.astype(jnp.float32)
        z = jnp.clip(jnp.round(-lo / s) - 8, -8, 7)
        codes = jnp.clip(jnp.round(groups / s[:, None, :]) + z[:, None, :], -8, 7)
        zero_points = pack_int4(z.astype(jnp.int8))
    packed = pack_int4(codes.reshape(k, n).astype(jnp.int8))
    return Int4Weight(packed, scales, zero_points, group_size=group_size, transposed=transposed, dtype=w.dtype)


def _is_float_matrix(path: Any, leaf: Any) -> bool:
    return (isinstance(leaf, (jax.Array, np.ndarray)) and leaf.ndim == 2
            and jnp.issubdtype(leaf.dtype, jnp.floating))


def quantize(params: Any, where: Optional[Callable[[Any, Any], bool]] = None, group_size: int = DEFAULT_GROUP_SIZE,
             symmetric: bool = True, in_axis: int = 0, scale_dtype: Any = jnp.bfloat16) -> Any:
    """``params`` with its 2-D float arrays (or those ``where(path, leaf)`` selects) as Int4Weights.

    ``in_axis`` is the contraction dim the groups run along: 0 for ``x @ W`` weights
    ``[in, out]``, 1 for ``W @ x`` weights ``[out, in]`` (``equinox.nn.Linear``).

    >>> p = quantize({"w": jnp.ones((128, 4)), "b": jnp.ones(4)})
    >>> type(p["w"]).__name__, type(p["b"]).__name__
    ('Int4Weight', 'ArrayImpl')
    """
    where = where or _is_float_matrix
    is_int4 = lambda x: isinstance(x, Int4Weight)  # noqa: E731
    flat, treedef = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_int4)
    out = []
    for path, leaf in flat:
        if is_int4(leaf) or not where(path, leaf):
            out.append(leaf)
            continue
        try:
            out.append(quantize_array(leaf, group_size, symmetric, in_axis, scale_dtype))
        except (ValueError, TypeError) as e:
            raise type(e)(f"{e} [at {jax.tree_util.keystr(path)}]") from None
    return jax.tree_util.tree_unflatten(treedef, out)


def dequantize(params: Any) -> Any:
    """``params`` with every Int4Weight replaced by its dense array."""
    is_int4 = lambda x: isinstance(x, Int4Weight)  # noqa: E731
    return jax.tree_util.tree_map(lambda x: x.materialize() if is_int4(x) else x, params, is_leaf=is_int4)


def weight_bytes(w: Int4Weight) -> int:
    """Device bytes of ``w``'s codes, scales and zero points."""
    leaves = [w.packed, w.scales] + ([w.zero_points] if w.zero_points is not None else [])
    return int(sum(np.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in leaves))


# -- transpose ---------------------------------------------------------------------------------

@primitive_handler("transpose")
def _transpose(primitive, w: Int4Weight, *, permutation):
    if tuple(permutation) == (0, 1):
        return w
    return dataclasses.replace(w, transposed=not w.transposed, shape=None)


from . import int4_dot as _int4_dot  # noqa: E402,F401  (registers the dot_general handlers)

__all__: Sequence[str] = ["DEFAULT_GROUP_SIZE", "Int4Weight", "dequantize", "dequantize_rows",
                          "pack_int4", "quantize", "quantize_array", "unpack_int4", "weight_bytes"]
