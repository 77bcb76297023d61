"""int4 weights: ``Int4Weight`` holds 4-bit codes and per-group scales, never a dense copy.

A weight is seen as a matrix ``W [in, out]`` (as in ``x @ W``), possibly with leading
*stack* dims (``[layers, in, out]``) and with ``in`` and ``out`` each made of several dims
(``[layers, qkv, heads, head_size, embed]`` contracting ``embed``). ``W`` is cut into
groups of ``group_size`` rows along the flattened ``in``, the contraction side. Each group
and output column has one scale ``s`` (and, when asymmetric, one integer zero point
``z``), and ``W[k, n] ~ (q[k, n] - z) * s`` with ``q`` in ``[-8, 7]``.

Storage: the codes are packed two per byte in a ``uint8 [*stack, in, out // 2]`` array
(byte ``j`` holds column ``j`` in its low nibble and column ``out // 2 + j`` in its high
nibble), scales are ``bfloat16 [*stack, in // group_size, out]`` and
zero points are packed like the codes. At group 128 that is 0.516 bytes per parameter
(0.520 asymmetric). Packed ``uint8`` rather than ``jnp.int4``: both take half a byte per
code as a compiled argument, but XLA:CPU converts an ``s4`` array that a loop reads into a
full ``s8`` copy (a temp of one byte per parameter), while ``uint8`` chunks are unpacked
inside the loop. Every child carries the stack dims, so ``lax.scan`` over a stacked
Int4Weight slices it leaf by leaf into one layer's Int4Weight.

The logical shape is ``stack + (in dims and out dims in the order aux field ``order``
gives)``. A ``dot_general`` with an Int4Weight on either side becomes a dot with the
dequantisation inside the program, chunk by chunk (see :mod:`namax.quant.int4_dot`);
transposes of the non-stack dims change ``order``; slicing one index of a stack dim
(``dynamic_slice`` or ``slice``, then ``squeeze``, as ``w[i]`` does) slices the children; a
float cast (``t.astype(jnp.bfloat16)``) changes ``dtype``, the dtype the weight is
dequantised into; other uses materialize.

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
import math
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .handlers import primitive_handler
from .implicit import ArrayValue, ImplicitArray, _has_aval, aux_field

DEFAULT_GROUP_SIZE = 128
"""Rows of the contraction dim that share one scale."""


def pack_int4(codes: Any) -> jax.Array:
    """``int [..., 2n]`` values in ``[-8, 7]`` -> ``uint8 [..., n]``, two per byte.

    Byte ``j`` holds code ``j`` in its low nibble and code ``n + j`` in its high nibble
    (two's complement nibbles): the two halves of the last dim share the bytes, so
    unpacking is two shifts and a concatenation, which XLA:CPU vectorizes.

    >>> pack_int4(jnp.array([1, -2], jnp.int8)).tolist()
    [225]
    """
    codes = jnp.asarray(codes)
    if codes.ndim == 0 or codes.shape[-1] % 2:
        raise ValueError(f"pack_int4: the last dim must be even (two codes per byte), got shape {codes.shape}")
    half = codes.shape[-1] // 2
    u = codes.astype(jnp.int8).astype(jnp.uint8) & jnp.uint8(0xF)
    return u[..., :half] | (u[..., half:] << jnp.uint8(4))


def unpack_int4_halves(packed: Any, dtype: Any = jnp.int8) -> tuple[jax.Array, jax.Array]:
    """:func:`unpack_int4` without the concatenation: the first and the second half of the codes.

    Sign-extending shifts on the bytes viewed as ``int8``: ``(b << 4) >> 4`` is the low
    half, ``b >> 4`` the high half. The packed input sits behind an ``optimization_barrier``
    so that XLA never constant-folds a closed-over weight into a dense copy.

    >>> [h.tolist() for h in unpack_int4_halves(jnp.array([225], jnp.uint8))]
    [[1], [-2]]
    """
    packed = jnp.asarray(packed)
    if packed.dtype != jnp.uint8:
        raise TypeError(f"unpack_int4 expects uint8, got {packed.dtype}")
    b = lax.bitcast_convert_type(lax.optimization_barrier(packed), jnp.int8)
    four = jnp.int8(4)
    low = lax.shift_right_arithmetic(lax.shift_left(b, four), four)
    return low.astype(dtype), lax.shift_right_arithmetic(b, four).astype(dtype)


def unpack_int4(packed: Any, dtype: Any = jnp.int8) -> jax.Array:
    """Inverse of :func:`pack_int4`: ``uint8 [..., n]`` -> ``dtype [..., 2n]`` values in ``[-8, 7]``.

    Measured on XLA:CPU (W 4096², inside the chunked dot), unpacking these split halves
    with shifts made int4 matvec 0.8x the f32 time, where ``bitcast_convert_type`` to
    ``int4`` of interleaved nibbles ran at 2-2.5x and shifts with an interleave at 4.3x.

    >>> unpack_int4(jnp.array([225], jnp.uint8)).tolist()
    [1, -2]
    """
    return jnp.concatenate(unpack_int4_halves(packed, dtype), axis=-1)


def dequantize_halves(packed: Any, scales: Any, zero_points: Optional[Any], group_size: int,
                      dtype: Any = jnp.float32) -> tuple[jax.Array, jax.Array]:
    """The dense ``[*stack, rows, out]`` weight as its two halves along ``out``, each ``[*stack, rows, out/2]``.

    Codes ``[*stack, rows, out/2]``, scales ``[*stack, rows/group_size, out]``. Each half is
    one elementwise fusion (unpack, convert, scale), with no concatenation in between.

    >>> packed = pack_int4(jnp.array([[1, -2], [3, 4]], jnp.int8))  # rows 2, out 2
    >>> low, high = dequantize_halves(packed, jnp.array([[0.5, 2.0]]), None, group_size=2)
    >>> low.tolist(), high.tolist()
    ([[0.5], [1.5]], [[-4.0], [8.0]])
    """
    *lead, rows, half = packed.shape
    g = rows // group_size
    scales = scales.astype(jnp.float32)[..., :, None, :]
    codes = unpack_int4_halves(packed, jnp.float32)
    zeros = (None, None) if zero_points is None else unpack_int4_halves(zero_points, jnp.float32)
    halves = []
    for i, (q, z) in enumerate(zip(codes, zeros)):
        q = q.reshape(*lead, g, group_size, half)
        if z is not None:
            q = q - z[..., :, None, :]
        w = q * scales[..., i * half:(i + 1) * half]
        halves.append(w.reshape(*lead, rows, half).astype(dtype))
    return halves[0], halves[1]


def dequantize_rows(packed: Any, scales: Any, zero_points: Optional[Any], group_size: int,
                    dtype: Any = jnp.float32) -> jax.Array:
    """Dense ``[*stack, rows, out]`` from codes ``[*stack, rows, out/2]`` and scales
    ``[*stack, rows/group_size, out]``.

    >>> packed = pack_int4(jnp.array([[1, -2], [3, 4]], jnp.int8))
    >>> dequantize_rows(packed, jnp.array([[0.5, 2.0]]), None, group_size=2).tolist()
    [[0.5, -4.0], [1.5, 8.0]]
    """
    return jnp.concatenate(dequantize_halves(packed, scales, zero_points, group_size, dtype), axis=-1)


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value)
    except TypeError as e:
        raise TypeError(f"Int4Weight.{what} must be a tuple of ints, got {value!r}") from e


@dataclasses.dataclass
class Int4Weight(ImplicitArray):
    """A weight as packed 4-bit codes, per-group scales and optional zero points.

    ``packed`` is ``uint8 [*stack, in, out // 2]``, ``scales`` is ``[*stack, in // group_size,
    out]`` and ``zero_points`` (asymmetric) is ``uint8 [*stack, in // group_size, out // 2]``
    or ``None``. ``in_shape`` and ``out_shape`` (default ``(in,)`` and ``(out,)``) split the
    flattened ``in`` and ``out`` into the weight's dims; ``order`` lists the logical order of
    those dims after the stack dims, as indices into ``in_shape + out_shape`` (default: in
    then out). ``dtype`` (keyword, default float32) is the dense weight's dtype.

    >>> codes = jnp.array([[1, -2], [3, 4]], jnp.int8)
    >>> w = Int4Weight(pack_int4(codes), jnp.array([[0.5, 2.0]], jnp.bfloat16), group_size=2)
    >>> w, w.materialize().tolist()
    (Int4Weight((2, 2), float32, group_size=2, symmetric), [[0.5, -4.0], [1.5, 8.0]])
    """

    packed: ArrayValue
    scales: ArrayValue
    zero_points: Optional[ArrayValue] = None
    group_size: int = aux_field(default=DEFAULT_GROUP_SIZE)
    in_shape: Optional[tuple] = aux_field(default=None)
    out_shape: Optional[tuple] = aux_field(default=None)
    order: Optional[tuple] = aux_field(default=None)

    def __post_init__(self) -> None:
        _validate(self)
        super().__post_init__()

    def compute_shape_dtype(self) -> tuple[tuple, Any]:
        lead = tuple(int(s) for s in self.packed.shape[:-2])
        dims = self.in_shape + self.out_shape
        return lead + tuple(dims[i] for i in self.order), jnp.dtype(self.dtype or jnp.float32)

    def child_names(self, names):
        """``packed`` keeps the input axis, ``scales`` the output axis, the stack axes stay on both."""
        leaves = 2 + (self.zero_points is not None)
        if names is None:
            return [None] * leaves
        names = tuple(names)
        k = self.n_stack
        stack, logical = names[:k], names[k:]
        dims: list = [None] * (len(self.in_shape) + len(self.out_shape))
        for position, dim in enumerate(self.order):
            dims[dim] = logical[position]
        in_name = dims[0] if len(self.in_shape) == 1 else None
        out_name = dims[len(self.in_shape)] if len(self.out_shape) == 1 else None
        out = [stack + (in_name, None), stack + (None, out_name)]
        return out + [stack + (None, None)] * (leaves - 2)

    @property
    def n_stack(self) -> int:
        """The number of leading stack dims (``layers``, ...)."""
        return len(self.packed.shape) - 2

    @property
    def stored_shape(self) -> tuple[int, ...]:
        """``(*stack, in, out)``: the dense weight in storage order (groups along ``in``)."""
        return tuple(int(s) for s in self.packed.shape[:-1]) + (2 * int(self.packed.shape[-1]),)

    @property
    def transposed(self) -> bool:
        """True when the logical dims are not in storage order (some out dim before an in dim)."""
        return self.order != tuple(range(len(self.order)))

    @property
    def symmetric(self) -> bool:
        return self.zero_points is None

    def materialize(self) -> jax.Array:
        scales = jax.lax.stop_gradient(self.scales)  # frozen, as in the dot (see ``frozen``)
        w = dequantize_rows(self.packed, scales, self.zero_points, self.group_size, self.dtype)
        lead = tuple(w.shape[:-2])
        w = w.reshape(lead + self.in_shape + self.out_shape)
        L = len(lead)
        perm = tuple(range(L)) + tuple(L + i for i in self.order)
        return w if perm == tuple(range(len(perm))) else jnp.transpose(w, perm)

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
    if len(packed.shape) < 2 or jnp.dtype(packed.dtype) != jnp.uint8:
        raise TypeError(f"Int4Weight.packed must be uint8 [*stack, in, out // 2] (two codes per byte), "
                        f"got {jnp.dtype(packed.dtype).name}{list(packed.shape)}")
    lead = tuple(int(s) for s in packed.shape[:-2])
    k, n = int(packed.shape[-2]), 2 * int(packed.shape[-1])
    w.in_shape = (k,) if w.in_shape is None else _int_tuple(w.in_shape, "in_shape")
    w.out_shape = (n,) if w.out_shape is None else _int_tuple(w.out_shape, "out_shape")
    ndims = len(w.in_shape) + len(w.out_shape)
    w.order = tuple(range(ndims)) if w.order is None else _int_tuple(w.order, "order")
    if math.prod(w.in_shape) != k or math.prod(w.out_shape) != n:
        raise ValueError(f"Int4Weight: in_shape {w.in_shape} and out_shape {w.out_shape} do not flatten to the "
                         f"packed codes' (in, out) = {(k, n)}")
    if sorted(w.order) != list(range(ndims)):
        raise ValueError(f"Int4Weight.order must be a permutation of range({ndims}), got {w.order}")
    if k % w.group_size:
        raise ValueError(f"Int4Weight: group_size {w.group_size} does not divide the contraction dim ({k} rows)")
    want = lead + (k // w.group_size, n)
    if tuple(scales.shape) != want or not jnp.issubdtype(scales.dtype, jnp.floating):
        raise ValueError(f"Int4Weight.scales must be a float array of shape {want} (one per group of "
                         f"{w.group_size} rows and output column), got {jnp.dtype(scales.dtype).name}"
                         f"{list(scales.shape)}")
    if zp is not None:
        zwant = want[:-1] + (n // 2,)
        if not _has_aval(zp) or tuple(zp.shape) != zwant or jnp.dtype(zp.dtype) != jnp.uint8:
            raise ValueError(f"Int4Weight.zero_points must be packed uint8 of shape {zwant}, got "
                             f"{getattr(zp, 'dtype', type(zp).__name__)}{list(getattr(zp, 'shape', ()))}")
    dims = w.in_shape + w.out_shape
    expected = lead + tuple(dims[i] for i in w.order)
    if w.shape is not None and tuple(w.shape) != expected:
        raise ValueError(f"Int4Weight: shape={tuple(w.shape)} disagrees with the packed codes ({expected})")


# -- quantize / dequantize -------------------------------------------------------------------

def _dims(value: Union[int, Sequence[int]], ndim: int, what: str, shape: tuple) -> tuple[int, ...]:
    dims = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    out = []
    for d in dims:
        if not isinstance(d, (int, np.integer)) or not -ndim <= d < ndim:
            raise ValueError(f"int4.quantize: {what} {d!r} is not a dim of the weight of shape {shape}")
        out.append(int(d) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"int4.quantize: {what} {value!r} names a dim twice")
    return tuple(out)


NONFINITE = ("error", "zero")
"""What :func:`quantize_array` does with NaN and infinite weights (``nonfinite=``)."""


def _check_nonfinite(w: jax.Array, nonfinite: str, names: Optional[Sequence[str]] = None) -> None:
    """Refuse a concrete weight holding NaN or inf (``nonfinite="error"``), naming the first one."""
    if nonfinite not in NONFINITE:
        raise ValueError(f"int4.quantize: nonfinite must be one of {NONFINITE}, got {nonfinite!r}")
    if nonfinite != "error" or isinstance(w, jax.core.Tracer) or w.size == 0:
        return
    finite = jnp.isfinite(w)
    if bool(jnp.all(finite)):
        return
    first = tuple(int(i) for i in np.unravel_index(int(jnp.argmin(finite.ravel())), w.shape))
    at = f"index {first}" if names is None else f"index {dict(zip(names, first))}"
    raise ValueError(f"int4.quantize: the weight of shape {tuple(w.shape)} has a non-finite value "
                     f"{w[first].item()} at {at}; a NaN or inf would spoil its whole group's scale. Fix the "
                     f"weight, or pass nonfinite='zero' to quantize non-finite values as 0")


def quantize_array(w: Any, group_size: int = DEFAULT_GROUP_SIZE, symmetric: bool = True,
                   in_axis: Union[int, Sequence[int]] = 0, scale_dtype: Any = jnp.bfloat16, *,
                   stack_dims: int = 0, nonfinite: str = "error") -> Int4Weight:
    """One float array as an :class:`Int4Weight`, grouped along the contraction dim(s) ``in_axis``.

    The first ``stack_dims`` dims are a stack (one matrix per index, e.g. ``layers``);
    ``in_axis`` (an int or a tuple of ints, dims of ``w``) are contracted with the input;
    every other dim is an output dim. A 2-D ``x @ W`` weight has ``in_axis=0``, an
    ``equinox.nn.Linear`` weight ``[out, in]`` has ``in_axis=1``.

    ``nonfinite`` says what a NaN or infinite weight does: ``"error"`` (the default) raises a
    ``ValueError`` giving the index of the first one; ``"zero"`` quantizes them as 0 (the
    rest of their group keeps its scale). Only a concrete ``w`` can be checked: under
    ``jit`` with ``"error"``, a group holding a non-finite weight gets a NaN scale, so its
    whole group dequantizes to NaN (never to plausible finite numbers).

    >>> q = quantize_array(jnp.ones((2, 4, 128)), in_axis=2, stack_dims=1)
    >>> q.shape, q.packed.shape
    ((2, 4, 128), (2, 128, 2))
    >>> quantize_array(jnp.ones((128, 4)).at[5, 1].set(jnp.nan))
    Traceback (most recent call last):
    ...
    ValueError: int4.quantize: the weight of shape (128, 4) has a non-finite value nan at index (5, 1); a NaN or inf would spoil its whole group's scale. Fix the weight, or pass nonfinite='zero' to quantize non-finite values as 0
    >>> q = quantize_array(jnp.full((128, 4), 7.0).at[5, 1].set(jnp.nan), nonfinite="zero")
    >>> q.materialize()[4:7, 1].tolist()
    [7.0, 0.0, 7.0]
    """
    if not _has_aval(w):
        raise TypeError(f"int4.quantize: expected an array, got {type(w).__name__}")
    w = jnp.asarray(w)
    shape = tuple(w.shape)
    if not jnp.issubdtype(w.dtype, jnp.floating):
        raise TypeError(f"int4.quantize: expected a float weight, got {w.dtype}")
    _check_nonfinite(w, nonfinite)
    if not isinstance(stack_dims, int) or not 0 <= stack_dims <= w.ndim - 2:
        raise ValueError(f"int4.quantize: a weight of shape {shape} with stack_dims={stack_dims} has fewer than 2 "
                         f"matrix dims (a bias, a norm scale or the wrong stack_dims was selected?)")
    ins = _dims(in_axis, w.ndim, "in_axis", shape)
    if any(d < stack_dims for d in ins):
        raise ValueError(f"int4.quantize: in_axis {in_axis} includes one of the {stack_dims} stack dims of the "
                         f"weight of shape {shape}")
    ins = tuple(sorted(ins))
    outs = tuple(d for d in range(stack_dims, w.ndim) if d not in ins)
    if not outs:
        raise ValueError(f"int4.quantize: in_axis {in_axis} leaves no output dim in the weight of shape {shape}")
    lead = shape[:stack_dims]
    in_shape, out_shape = tuple(shape[d] for d in ins), tuple(shape[d] for d in outs)
    k, n = math.prod(in_shape), math.prod(out_shape)
    if not isinstance(group_size, int) or group_size < 1 or k % group_size:
        raise ValueError(f"int4.quantize: group_size {group_size} does not divide the contraction dim "
                         f"(in_axis {in_axis}, {k} rows) of the weight of shape {shape}")
    if n % 2:
        raise ValueError(f"int4.quantize: the output dim (size {n}) of the weight of shape {shape} "
                         f"must be even: codes are packed two per byte along it")
    stored = jnp.transpose(w, tuple(range(stack_dims)) + ins + outs).reshape(lead + (k, n))
    groups = stored.astype(jnp.float32).reshape(lead + (k // group_size, group_size, n))
    if nonfinite == "zero":
        groups = jnp.where(jnp.isfinite(groups), groups, 0.0)
    finite = jnp.all(jnp.isfinite(groups), axis=-2)  # per group and column: else a NaN scale
    if symmetric:
        amax = jnp.max(jnp.abs(groups), axis=-2)
        scales = jnp.where(finite, jnp.where(amax > 0, amax / 7.0, 1.0), jnp.nan).astype(scale_dtype)
        codes = jnp.clip(jnp.round(groups / scales.astype(jnp.float32)[..., None, :]), -8, 7)
        codes = jnp.where(jnp.isnan(codes), 0.0, codes)  # a NaN group: codes 0, the NaN scale carries it
        zero_points = None
    else:
        lo = jnp.minimum(jnp.min(groups, axis=-2), 0.0)
        hi = jnp.maximum(jnp.max(groups, axis=-2), 0.0)
        scales = jnp.where(finite, jnp.where(hi > lo, (hi - lo) / 15.0, 1.0), jnp.nan).astype(scale_dtype)
        s = scales.astype(jnp.float32)
        z = jnp.clip(jnp.round(-lo / s) - 8, -8, 7)
        z = jnp.where(jnp.isnan(z), 0.0, z)
        codes = jnp.clip(jnp.round(groups / s[..., None, :]) + z[..., None, :], -8, 7)
        codes = jnp.where(jnp.isnan(codes), 0.0, codes)
        zero_points = pack_int4(z.astype(jnp.int8))
    packed = pack_int4(codes.reshape(lead + (k, n)).astype(jnp.int8))
    canonical = ins + outs
    order = tuple(canonical.index(d) for d in range(stack_dims, w.ndim))
    return Int4Weight(packed, scales, zero_points, group_size=group_size, in_shape=in_shape, out_shape=out_shape,
                      order=order, dtype=w.dtype)


def quantize_named(w: Any, in_axes: Any, stack_axes: Any = (), group_size: int = DEFAULT_GROUP_SIZE,
                   symmetric: bool = True, scale_dtype: Any = jnp.bfloat16, *, nonfinite: str = "error") -> Any:
    """A NamedArray weight as a NamedArray holding an :class:`Int4Weight`, same axes.

    ``in_axes`` are the names contracted with the input (``Linear.In``); ``stack_axes``
    (e.g. ``"layers"``) must be the leading axes; every other axis is an output axis.
    ``nonfinite`` is :func:`quantize_array`'s (the error gives the position by axis name).

    >>> import namax as nx
    >>> w = nx.ones((nx.Axis("layers", 2), nx.Axis("mlp", 4), nx.Axis("embed", 128)))
    >>> quantize_named(w, "embed", "layers").array.shape
    (2, 4, 128)
    """
    from namax.named import NamedArray

    if not isinstance(w, NamedArray):
        raise TypeError(f"int4.quantize_named: expected a NamedArray, got {type(w).__name__}")
    in_names = (in_axes,) if isinstance(in_axes, str) else tuple(getattr(a, "name", a) for a in in_axes)
    stack_names = (stack_axes,) if isinstance(stack_axes, str) else tuple(getattr(a, "name", a) for a in stack_axes)
    names = w.axis_names
    for n in in_names + stack_names:
        if n not in names:
            raise ValueError(f"int4.quantize_named: the weight with axes {names} has no axis {n!r}")
    if names[:len(stack_names)] != stack_names:
        raise ValueError(f"int4.quantize_named: the stack axes {stack_names} must lead the weight's axes {names}")
    if _has_aval(w.array) and jnp.issubdtype(w.dtype, jnp.floating):
        _check_nonfinite(jnp.asarray(w.array), nonfinite, names)
    q = quantize_array(w.array, group_size, symmetric, tuple(names.index(n) for n in in_names), scale_dtype,
                       stack_dims=len(stack_names), nonfinite=nonfinite)
    return NamedArray(q, w.axes)


def _is_float_matrix(stack_dims: int) -> Callable[[Any, Any], bool]:
    def select(path: Any, leaf: Any) -> bool:
        return (isinstance(leaf, (jax.Array, np.ndarray)) and leaf.ndim == 2 + stack_dims
                and jnp.issubdtype(leaf.dtype, jnp.floating))

    return select


def quantize(params: Any, where: Optional[Callable[[Any, Any], bool]] = None, group_size: int = DEFAULT_GROUP_SIZE,
             symmetric: bool = True, in_axis: Union[int, Sequence[int]] = 0, scale_dtype: Any = jnp.bfloat16, *,
             stack_dims: int = 0, nonfinite: str = "error") -> Any:
    """``params`` with its float matrices (or the arrays ``where(path, leaf)`` selects) as Int4Weights.

    ``in_axis`` is the contraction dim (or dims) the groups run along: 0 for ``x @ W``
    weights ``[in, out]`` (flax's ``Dense`` kernels), 1 for ``W @ x`` weights ``[out, in]``
    (``equinox.nn.Linear``). ``stack_dims`` leading dims are a stack of matrices; by
    default the arrays with ``2 + stack_dims`` float dims are selected. NamedArray weights:
    :func:`quantize_named`. ``nonfinite`` is :func:`quantize_array`'s; its error names the
    parameter's path.

    >>> p = quantize({"w": jnp.ones((128, 4)), "b": jnp.ones(4)})
    >>> type(p["w"]).__name__, type(p["b"]).__name__
    ('Int4Weight', 'ArrayImpl')
    >>> quantize({"w": jnp.ones((128, 4)).at[0, 3].set(jnp.inf)})
    Traceback (most recent call last):
    ...
    ValueError: int4.quantize: the weight of shape (128, 4) has a non-finite value inf at index (0, 3); a NaN or inf would spoil its whole group's scale. Fix the weight, or pass nonfinite='zero' to quantize non-finite values as 0 [at ['w']]
    """
    where = where or _is_float_matrix(stack_dims)
    is_int4 = lambda x: isinstance(x, Int4Weight)  # noqa: E731
    flat, treedef = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_int4)
    out = []
    for path, leaf in flat:
        if is_int4(leaf) or not where(path, leaf):
            out.append(leaf)
            continue
        try:
            out.append(quantize_array(leaf, group_size, symmetric, in_axis, scale_dtype, stack_dims=stack_dims,
                                      nonfinite=nonfinite))
        except (ValueError, TypeError) as e:
            raise type(e)(f"{e} [at {jax.tree_util.keystr(path)}]") from None
    return jax.tree_util.tree_unflatten(treedef, out)


def dequantize(params: Any) -> Any:
    """``params`` with every Int4Weight replaced by its dense array.

    >>> dense = dequantize(quantize({"w": jnp.ones((128, 4)), "b": jnp.ones(4)}))
    >>> type(dense["w"]).__name__, dense["w"].shape, round(float(dense["w"].mean()), 2)
    ('ArrayImpl', (128, 4), 1.0)
    """
    is_int4 = lambda x: isinstance(x, Int4Weight)  # noqa: E731
    return jax.tree_util.tree_map(lambda x: x.materialize() if is_int4(x) else x, params, is_leaf=is_int4)


def weight_bytes(tree: Any) -> int:
    """Device bytes of the arrays in ``tree``: an Int4Weight's codes, scales and zero points, or any pytree's leaves.

    >>> weight_bytes(quantize_array(jnp.ones((128, 4))))
    264
    """
    return int(sum(np.prod(np.shape(x)) * jnp.dtype(x.dtype).itemsize for x in jax.tree_util.tree_leaves(tree)))


# -- transpose and stack slicing ---------------------------------------------------------------

def _children_map(w: Int4Weight, fn: Callable[[Any], Any]) -> Int4Weight:
    zp = None if w.zero_points is None else fn(w.zero_points)
    return Int4Weight(fn(w.packed), fn(w.scales), zp, group_size=w.group_size, in_shape=w.in_shape,
                      out_shape=w.out_shape, order=w.order, dtype=w.dtype)


def frozen(w: Int4Weight) -> Int4Weight:
    """``w`` as the dot and ``materialize`` use it: its scales carry no gradient (the codes are
    integers and never do), so a gradient with respect to an Int4Weight is zero and XLA
    computes none of it.

    >>> import jax, jax.numpy as jnp
    >>> w = quantize_array(jax.random.normal(jax.random.key(0), (128, 4)))
    >>> g = jax.grad(lambda w: frozen(w).materialize().sum(), allow_int=True)(w)
    >>> float(jnp.abs(g.scales).max())
    0.0
    """
    return _children_map(w, jax.lax.stop_gradient)


@primitive_handler("transpose")
def _transpose(primitive, w: Int4Weight, *, permutation):
    perm, L = tuple(permutation), w.n_stack
    if perm == tuple(range(len(perm))):
        return w
    if perm[:L] != tuple(range(L)):
        return NotImplemented  # moving a stack dim: materialize
    return dataclasses.replace(w, order=tuple(w.order[p - L] for p in perm[L:]), shape=None)


@primitive_handler("dynamic_slice")
def _dynamic_slice(primitive, w: Int4Weight, *starts, slice_sizes):
    """``w[i:i+1]`` along stack dims (full size elsewhere) slices every child the same way."""
    L = w.n_stack
    if tuple(slice_sizes[L:]) != tuple(w.shape[L:]):
        return NotImplemented
    return _children_map(w, lambda c: lax.dynamic_slice(c, list(starts[:L]) + [0] * (c.ndim - L),
                                                        tuple(slice_sizes[:L]) + tuple(c.shape[L:])))


@primitive_handler("slice")
def _slice(primitive, w: Int4Weight, *, start_indices, limit_indices, strides):
    """``w[i]`` with a static ``i`` (or ``w[i:j]``) along stack dims, full size elsewhere, slices every child."""
    L = w.n_stack
    whole = tuple(start_indices[L:]) == (0,) * (w.ndim - L) and tuple(limit_indices[L:]) == tuple(w.shape[L:])
    if not whole or any(s != 1 for s in (strides or ())):
        return NotImplemented
    return _children_map(w, lambda c: lax.slice(c, tuple(start_indices[:L]) + (0,) * (c.ndim - L),
                                                tuple(limit_indices[:L]) + tuple(c.shape[L:])))


@primitive_handler("squeeze")
def _squeeze(primitive, w: Int4Weight, *, dimensions):
    if any(d >= w.n_stack for d in dimensions):
        return NotImplemented
    return _children_map(w, lambda c: lax.squeeze(c, dimensions))


@primitive_handler("convert_element_type")
def _convert(primitive, w: Int4Weight, *, new_dtype, weak_type, sharding=None):
    """A float cast (``t.astype(jnp.bfloat16)``): the same codes and scales, ``dtype`` set to ``new_dtype``.

    The dequantised values ``(q - z) s`` (formed in float32) are delivered in the new
    dtype: :meth:`Int4Weight.materialize` rounds them to it as the cast of the dense weight
    does, and the dot handlers dequantise into it (so ``x.astype(jnp.bfloat16) @ t`` stays a
    bf16 dot, and ``preferred_element_type`` still sets the result's dtype). The packed codes
    and the scales are unchanged. A narrowing then widening cast (bf16, then float32)
    is not rounded twice: the weight then gives the float32 values, which differ from the
    dense chain by at most the narrow dtype's rounding. ``weak_type`` only marks the dense
    result for type promotion, which was settled when the function was traced (the
    equations after the cast are already typed), so it changes nothing here. Casts to
    integer or bool, and casts with an output ``sharding``, materialize.

    >>> import namax.quant as qax
    >>> q = quantize_array(jnp.ones((128, 4)))
    >>> c = qax.use_implicit_args(lambda t: t.astype(jnp.bfloat16))(q)
    >>> c, c.scales.dtype == q.scales.dtype, c.materialize().dtype
    (Int4Weight((128, 4), bfloat16, group_size=128, symmetric), True, dtype(bfloat16))
    """
    floats = jnp.issubdtype(w.dtype, jnp.floating) and jnp.issubdtype(new_dtype, jnp.floating)
    if sharding is not None or not floats:
        return NotImplemented
    if jnp.dtype(new_dtype) == jnp.dtype(w.dtype):
        return w
    return dataclasses.replace(w, dtype=jnp.dtype(new_dtype), shape=None)  # shape re-inferred: scan can slice it


from . import int4_dot as _int4_dot  # noqa: E402,F401  (registers the dot_general handlers)

__all__: Sequence[str] = ["DEFAULT_GROUP_SIZE", "Int4Weight", "dequantize", "dequantize_halves", "dequantize_rows", "frozen",
                          "pack_int4", "quantize", "quantize_array", "quantize_named", "unpack_int4",
                          "unpack_int4_halves", "weight_bytes"]
