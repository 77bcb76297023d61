"""``dot_general`` with an :class:`~namax.quant.int4.Int4Weight`: dequantise inside the program.

The weight's logical dims are mapped to its storage ``[*stack, in, out]``: the input's
dims that meet the weight's ``in`` dims (or ``out`` dims) are transposed together and
flattened into one, so the dot is always against a (stack of) matrices; the result's
flattened dims are unflattened and permuted to what the primitive produces. Every dim of
a group must play the same role (all contracted, all batch or all free); a dot mixing
roles inside ``in`` or ``out`` materializes the weight (with the usual warning). Stack
dims may be batch (a batched dot over ``layers``), contracted or free.

The activation always stays the left operand, contracting its own dims (a weight on the
left is handled by swapping the operands and transposing the small result). Three forms:

- ``"kernel"`` (CPU, when :func:`namax.quant.int4_kernel.available`): a custom call into the
  compiled kernel of :mod:`namax.quant.int4_kernel`, which reads the packed codes once and
  keeps each scale group's sums in registers (no dequantised tile in memory, no temp beyond
  the result). It serves ``x [*stack, rows, in] . W [*stack, in, out]`` (stack dims, if any,
  batch dims in order) for a float32 weight and float32 activations with at most
  ``KERNEL_MAX_ROWS`` rows. Measured (2 cores): 0.2-0.45x the f32 time for a matvec,
  0.55-0.75x at 16 rows, a decode step streaming 128 MiB of f32 weights 0.15-0.25x. Only
  outside a mesh context (``jax.sharding.get_abstract_mesh()`` empty, or inside
  ``shard_map`` where every mesh axis is manual and each device runs its own dot) and for
  operands whose types carry no split sharding: XLA's SPMD partitioner does not partition a custom call (it
  gathers the operands and runs the whole dot on every device: correct, not parallel; that
  is what a program sharded only through ``jax.jit``'s shardings in auto mode gets). Every
  other dot takes the ``"scan"`` form, and so does the gradient with respect to the
  activation (on the transposed problem). A bfloat16 weight (``w.astype(jnp.bfloat16)``)
  is dequantised into bfloat16 element by element, which per-group sums cannot reproduce,
  so it takes the ``"scan"`` form too.
- ``"scan"`` (XLA:CPU): ``lax.scan`` over chunks of whole scale groups along the weight's
  contraction dim; each step unpacks its chunk, applies the scales, runs the dot and
  accumulates. The two halves of the packed out dim are dequantised and multiplied
  separately (a concatenation between the unpack and the dot cost 5-15%). XLA:CPU never
  fuses a convert into a dot, so dequantising the whole weight first would build a full
  f32 copy and run at 3.5-13x the f32 time; the chunked form keeps one chunk live. A
  matvec (one row of activations) instead runs one dot per scale group on the converted
  codes and scales the small per-group results: 0.5-1.0x the f32 time where scaling the
  tile first ran at 1.3-1.6x (for 2+ rows the per-group dots are 1.2-4x slower, so they
  are left to the tile form). The step is rematerialised, so gradients recompute chunks too.
- ``"grouped"`` (GPU/TPU, unmeasured): one ``dot_general(x, int4_codes,
  preferred_element_type=f32)`` batched over the groups, scales applied to the per-group
  results, then summed; those compilers fuse the int4 operand into the dot.

``DOT_FORM``, ``KERNEL_MAX_ROWS``, ``CPU_TILE_BYTES`` and ``CPU_MIN_CHUNKS`` are the
module-level settings; ``NAMAX_INT4_KERNEL=0`` in the environment disables the kernel.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import int4_kernel
from .handlers import primitive_handler
from .int4 import Int4Weight, dequantize_halves, frozen, unpack_int4, unpack_int4_halves

DOT_FORM: str = "auto"
"""``"auto"`` (``"kernel"`` on cpu when the kernel is available, else ``"scan"``; ``"grouped"`` on
gpu/tpu), ``"kernel"`` (falls back to ``"scan"`` where the kernel does not apply), ``"scan"`` or
``"grouped"``."""

KERNEL_MAX_ROWS: int = 128
"""The ``"kernel"`` form serves dots with at most this many activation rows (per stack entry);
larger ones take the ``"scan"`` form, whose f32 tiles feed XLA's matmul. Measured (2 cores,
W 2048² and 4096²): the kernel took 0.55-0.85x the scan form's time at 32-64 rows, tied at
128 and took 0.95-1.2x from 256 rows, where XLA's matmul reuses each f32 tile better."""

CPU_TILE_BYTES: int = 8 * 2 ** 20
"""Target size of one dequantised chunk in the ``"scan"`` form, in bytes of f32. The chunk
count is the divisor of ``in // group_size`` closest (in ratio) to the dense f32 weight's
bytes over this. Measured on XLA:CPU (2 cores, 32 MiB L3; W 1024² to 4096², batch 1 and
16): 8 MiB tiles were fastest at every size (1 chunk at 1024², 2 at 2048², 8 at 4096²);
one whole-weight chunk at 4096² ran 12x slower (a fresh 64 MiB temp per call) and
16 MiB-and-up chunks 1.5-8x slower, while 1-4 MiB tiles lost 10-50% to loop overhead.
There are at least ``CPU_MIN_CHUNKS`` chunks (when the weight has that many groups)."""

CPU_MIN_CHUNKS: int = 4
"""At least this many chunks, so a compiled program's temp stays under half the dense f32
weight whatever its size (2 chunks would hold half plus the other temps)."""


def form() -> str:
    """The dot form in use: ``DOT_FORM``, resolved against ``jax.default_backend()``.

    >>> cpu = "kernel" if int4_kernel.available() else "scan"
    >>> DOT_FORM, form() == (cpu if jax.default_backend() == "cpu" else "grouped")
    ('auto', True)
    """
    if DOT_FORM not in ("auto", "kernel", "scan", "grouped"):
        raise ValueError(f"namax.quant.int4_dot.DOT_FORM must be 'auto', 'kernel', 'scan' or 'grouped', "
                         f"got {DOT_FORM!r}")
    if DOT_FORM == "kernel" and not int4_kernel.available():
        raise RuntimeError(f"namax.quant.int4_dot.DOT_FORM is 'kernel' but the kernel is unavailable: "
                           f"{int4_kernel.status()}")
    if DOT_FORM != "auto":
        return DOT_FORM
    if jax.default_backend() != "cpu":
        return "grouped"
    return "kernel" if int4_kernel.available() else "scan"


def chunk_count(n_groups: int, target: int) -> int:
    """The divisor of ``n_groups`` closest in ratio to ``target``.

    >>> chunk_count(32, 8), chunk_count(11, 8), chunk_count(1, 8)
    (8, 11, 1)
    """
    if target < 1:
        raise ValueError(f"the chunk count must be >= 1, got {target}")
    divisors = [d for d in range(1, n_groups + 1) if n_groups % d == 0]
    return min(divisors, key=lambda d: (abs(math.log(d / target)), -d))


def _split_dim(x: jax.Array, axis: int, chunks: int) -> jax.Array:
    """``x`` with ``axis`` split into ``(chunks, size // chunks)`` and the chunk dim moved first."""
    shape = x.shape[:axis] + (chunks, x.shape[axis] // chunks) + x.shape[axis + 1:]
    return jnp.moveaxis(x.reshape(shape), axis, 0)


def _merge_dim(y: jax.Array, axis: int) -> jax.Array:
    """Inverse of :func:`_split_dim`: stacked chunks ``[C, ...]`` merged back into ``axis``."""
    y = jnp.moveaxis(y, 0, axis)
    return y.reshape(y.shape[:axis] + (y.shape[axis] * y.shape[axis + 1],) + y.shape[axis + 2:])


def _split_in_two(x: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
    """The first and the second half of ``x`` along ``axis``."""
    half = x.shape[axis] // 2
    return lax.slice_in_dim(x, 0, half, axis=axis), lax.slice_in_dim(x, half, 2 * half, axis=axis)


def _dot_halves(x: jax.Array, low: jax.Array, high: jax.Array, dn: Any, dot_params: dict) -> jax.Array:
    """``dot_general(x, concatenate([low, high], -1), dn)`` without building the concatenation.

    The weight's last dim is split in two: if ``dn`` contracts it, the two dots are summed;
    if it is a batch or a free dim, the two results are concatenated where it lands.
    """
    (xc, wc), (xb, wb) = dn
    last = low.ndim - 1
    paired = dict(zip(wc, xc)) | dict(zip(wb, xb))
    if last in paired:
        x_low, x_high = _split_in_two(x, paired[last])
    else:
        x_low = x_high = x
    y_low = lax.dot_general(x_low, low, dn, **dot_params)
    y_high = lax.dot_general(x_high, high, dn, **dot_params)
    if last in wc:
        return y_low + y_high
    if last in wb:
        axis = wb.index(last)
    else:
        axis = len(xb) + (x.ndim - len(xc) - len(xb)) + sum(1 for d in range(last) if d not in wc and d not in wb)
    return lax.concatenate([y_low, y_high], axis)


def _per_stack_matmul(w: Int4Weight, dn: Any) -> bool:
    """Whether ``dn`` (in :func:`_stored_dot`'s arrangement) is one matmul per stack entry:
    only the weight's grouped dim contracted, its stack dims batch in order."""
    (_, wc), (_, wb) = dn
    return tuple(wc) == (w.n_stack,) and tuple(wb) == tuple(range(w.n_stack))


def _is_matvec(x: jax.Array, w: Int4Weight, dn: Any) -> bool:
    """Whether ``dn`` (in :func:`_stored_dot`'s arrangement) is a matvec per stack entry:
    one row of ``x`` in a :func:`_per_stack_matmul`."""
    (xc, _), (xb, _) = dn
    free_rows = math.prod(x.shape[d] for d in range(x.ndim) if d not in xc and d not in xb)
    return free_rows == 1 and _per_stack_matmul(w, dn)


def _matvec_halves(x: jax.Array, packed: jax.Array, scales: jax.Array, zeros: Optional[jax.Array],
                   group_size: int, dot_params: dict) -> jax.Array:
    """A matvec chunk ``[*stack, 1.., rows] . [*stack, rows, out]`` with the scales applied after
    one dot per group, so the dequantised tile is the codes converted and nothing more.

    ``x`` is ``[*stack, *ones, rows]``; the result is ``[*stack, *ones, out]`` in f32.
    """
    *stack, rows, half = packed.shape
    L, g = len(stack), rows // group_size
    n_ones = x.ndim - L - 1
    code_type = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    xg = x.reshape(x.shape[:-1] + (g, group_size))  # [*stack, *ones, g, group]
    dn = (((x.ndim,), (L + 1,)), (tuple(range(L)) + (x.ndim - 1,), tuple(range(L)) + (L,)))
    scale_shape = (*stack, g) + (1,) * n_ones + (half,)
    codes = unpack_int4_halves(packed, code_type)
    zero_halves = (None, None) if zeros is None else unpack_int4_halves(zeros, jnp.float32)
    x_sums = None if zeros is None else jnp.moveaxis(jnp.sum(xg.astype(jnp.float32), axis=-1), -1, L)[..., None]
    outs = []
    for i, (q, z) in enumerate(zip(codes, zero_halves)):
        per_group = lax.dot_general(xg, q.reshape(*stack, g, group_size, half), dn,  # [*stack, g, *ones, half]
                                    precision=dot_params.get("precision"), preferred_element_type=jnp.float32)
        if z is not None:
            per_group = per_group - x_sums * z.reshape(scale_shape)
        s = scales[..., i * half:(i + 1) * half].astype(jnp.float32)
        outs.append(jnp.sum(per_group * s.reshape(scale_shape), axis=L))
    return jnp.concatenate(outs, axis=-1)


def _scan_dot(x: jax.Array, w: Int4Weight, dn: Any, dot_params: dict) -> jax.Array:
    """``dot_general(x, dense(w stored [*stack, in, out]), dn)``, dequantising one chunk per scan step."""
    (xc, wc), (xb, wb) = dn
    L = w.n_stack
    k = w.stored_shape[L]
    n_groups = k // w.group_size
    chunks = chunk_count(n_groups, max(CPU_MIN_CHUNKS, round(4 * math.prod(w.stored_shape) / CPU_TILE_BYTES)))
    zp = w.zero_points
    weight_xs = (_split_dim(w.packed, L, chunks), _split_dim(w.scales.astype(jnp.float32), L, chunks),
                 None if zp is None else _split_dim(zp, L, chunks))
    pairs = dict(zip(wc, xc)) | dict(zip(wb, xb))
    x_axis = pairs.get(L)  # the dim of x that meets the weight's grouped dim, if any

    matvec = _is_matvec(x, w, dn)
    out_type = dot_params.get("preferred_element_type") or jnp.result_type(x.dtype, w.dtype)

    def step(x_chunk: jax.Array, chunk: tuple) -> jax.Array:
        packed, scales, zeros = chunk
        if matvec:
            return _matvec_halves(x_chunk, packed, scales, zeros, w.group_size, dot_params).astype(out_type)
        low, high = dequantize_halves(packed, scales, zeros, w.group_size, w.dtype)
        return _dot_halves(x_chunk, low, high, dn, dot_params)

    step = jax.checkpoint(step)
    if x_axis is None:
        ys = lax.map(lambda chunk: step(x, chunk), weight_xs)
    else:
        x_chunks = _split_dim(x, x_axis, chunks)
        if L in wc:
            first = jax.eval_shape(step, x_chunks[0], jax.tree_util.tree_map(lambda a: a[0], weight_xs))
            init = jnp.zeros(first.shape, first.dtype)
            return lax.scan(lambda acc, xs: (acc + step(*xs), None), init, (x_chunks, weight_xs))[0]
        ys = lax.map(lambda xs: step(*xs), (x_chunks, weight_xs))
    # The grouped dim is batch or free: each chunk gives a slice of the output along it.
    if L in wb:
        out_axis = wb.index(L)
    else:
        free_before = sum(1 for d in range(L) if d not in wc and d not in wb)
        out_axis = len(xb) + (x.ndim - len(xc) - len(xb)) + free_before
    return _merge_dim(ys, out_axis)


def _grouped_dot(x: jax.Array, w: Int4Weight, dn: Any, dot_params: dict) -> Optional[jax.Array]:
    """Direct int4 dot per group with scales after; only for ``x [..., in] . w [in, out]``-like dn."""
    (xc, wc), (xb, wb) = dn
    if w.n_stack or tuple(wc) != (0,) or wb:
        return None
    k, n = w.stored_shape
    g, size = k // w.group_size, w.group_size
    axis = xc[0]
    xg = _split_dim(x, axis, g)  # [g, ..., size at axis + 1, ...]
    codes = unpack_int4(w.packed, jnp.int4).reshape(g, size, n)
    acc_type = jnp.float32 if jnp.dtype(x.dtype).itemsize <= 4 else x.dtype
    per_group = lax.dot_general(xg, codes, (((axis + 1,), (1,)), ((0,), (0,))),
                                precision=dot_params.get("precision"), preferred_element_type=acc_type)
    bshape = (g,) + (1,) * (per_group.ndim - 2) + (n,)
    scales = w.scales.astype(acc_type).reshape(bshape)
    out = per_group * scales
    if w.zero_points is not None:
        zs = unpack_int4(w.zero_points, acc_type).reshape(bshape) * scales
        out = out - jnp.sum(xg.astype(acc_type), axis=axis + 1)[..., None] * zs
    out_type = dot_params.get("preferred_element_type") or jnp.result_type(x.dtype, w.dtype)
    return jnp.sum(out, axis=0).astype(out_type)


def _kernel_applies(x: jax.Array, w: Int4Weight, dn: Any, dot_params: dict) -> bool:
    """Whether the ``"kernel"`` form serves this dot (in :func:`_stored_dot`'s arrangement)."""
    L = w.n_stack
    if not _per_stack_matmul(w, dn):  # x is [*stack, free.., in] by _stored_dot's arrangement
        return False
    out_type = dot_params.get("preferred_element_type")
    if (jnp.dtype(x.dtype) != jnp.float32 or jnp.dtype(w.dtype) != jnp.float32
            or (out_type is not None and jnp.dtype(out_type) != jnp.float32)):
        return False
    rows = math.prod(x.shape[L:-1])
    if not 1 <= rows <= KERNEL_MAX_ROWS or 0 in x.shape or 0 in w.stored_shape:
        return False
    mesh = jax.sharding.get_abstract_mesh()
    manual = all(t == jax.sharding.AxisType.Manual for t in mesh.axis_types)  # inside shard_map: per-device
    if not mesh.empty and not manual:
        return False  # a custom call is not partitioned: leave sharded programs to XLA
    return not any(_sharded(a) for a in (x, w.packed, w.scales))


def _sharded(a: Any) -> bool:
    """Whether ``a``'s type carries a sharding that splits it (explicit sharding mode)."""
    sharding = getattr(jax.typeof(a), "sharding", None)
    spec = getattr(sharding, "spec", None)
    return spec is not None and any(p is not None for p in spec)


def _kernel_dot(x: jax.Array, w: Int4Weight) -> jax.Array:
    """The ``"kernel"`` form: ``x [*stack, free.., in]`` against ``w [*stack, in, out]``."""
    L = w.n_stack
    free = x.shape[L:-1]
    x2 = x.reshape(x.shape[:L] + (math.prod(free), x.shape[-1]))
    y = int4_kernel.matmul(x2, w.packed, w.scales, w.zero_points, w.group_size)
    return y.reshape(x.shape[:L] + free + (y.shape[-1],))


def _stored_dot(x: jax.Array, w: Int4Weight, dn: Any, dot_params: dict) -> jax.Array:
    """``dot_general(x, w in storage shape [*stack, in, out], dn)`` with the activation as [batch, free, contracted]."""
    (xc, wc), (xb, wb) = dn
    x_free_dims = [d for d in range(x.ndim) if d not in xc and d not in xb]
    order = (*xb, *x_free_dims, *xc)
    if order != tuple(range(x.ndim)):
        x = lax.transpose(x, order)
    dn = ((tuple(range(x.ndim - len(xc), x.ndim)), tuple(wc)), (tuple(range(len(xb))), tuple(wb)))
    kind = form()
    if kind == "kernel" and _kernel_applies(x, w, dn, dot_params):
        return _kernel_dot(x, w)
    out = _grouped_dot(x, w, dn, dot_params) if kind == "grouped" else None
    return _scan_dot(x, w, dn, dot_params) if out is None else out


def int4_dot(x: jax.Array, w: Int4Weight, dn: Any, weight_on_left: bool, params: dict) -> Any:
    """``dot_general`` of ``x`` with ``w`` (on the side ``weight_on_left`` says), never a dense ``w``.

    Returns ``NotImplemented`` when a dot gives different roles to dims of the weight's
    ``in`` group (or of its ``out`` group), which the caller materializes.

    >>> from namax.quant.int4 import quantize_array
    >>> w = quantize_array(jax.random.normal(jax.random.key(0), (128, 4)))
    >>> x = jnp.ones((2, 128))
    >>> y = int4_dot(x, w, (((1,), (0,)), ((), ())), weight_on_left=False, params={})
    >>> y.shape, bool(jnp.allclose(y, x @ w.materialize(), atol=1e-4))
    ((2, 4), True)
    """
    (lc, rc), (lb, rb) = dn
    xc, wc, xb, wb = (rc, lc, rb, lb) if weight_on_left else (lc, rc, lb, rb)
    precision = params.get("precision")
    if weight_on_left and isinstance(precision, tuple):
        precision = precision[::-1]
    dot_params = {"precision": precision, "preferred_element_type": params.get("preferred_element_type")}
    w = frozen(w)
    L, n_in = w.n_stack, len(w.in_shape)
    sizes = w.in_shape + w.out_shape
    # role of each storage-order dim (stack dims, then in dims, then out dims): (kind, x dim)
    logical_of = list(range(L)) + [L + w.order.index(c) for c in range(len(sizes))]
    role: dict[int, tuple[str, int]] = {}
    for kind, xs, ws in (("c", xc, wc), ("b", xb, wb)):
        for i, d in zip(xs, ws):
            role[logical_of.index(d)] = (kind, i)
    groups = (tuple(range(L, L + n_in)), tuple(range(L + n_in, L + len(sizes))))
    kinds = []
    for dims in groups:
        found = {role.get(d, ("f", -1))[0] for d in dims}
        if len(found) != 1:
            return NotImplemented
        kinds.append(found.pop())
    # x' = x with the dims meeting each group transposed together and flattened
    group_x = [[role[d][1] for d in dims] if kind != "f" else [] for dims, kind in zip(groups, kinds)]
    rest = [i for i in range(x.ndim) if i not in group_x[0] and i not in group_x[1]]
    perm = rest + group_x[0] + group_x[1]
    xt = x if perm == list(range(x.ndim)) else lax.transpose(x, tuple(perm))
    new_shape = [x.shape[i] for i in rest] + [math.prod(x.shape[i] for i in g) for g in group_x if g]
    xt = xt.reshape(new_shape)
    x_pos = {i: rest.index(i) for i in rest}
    slot = len(rest)
    for g in group_x:
        if g:
            for i in g:
                x_pos[i] = slot
            slot += 1
    # x' dim -> the atoms (original dims, labelled) it holds
    x_atoms = [[("x", i)] for i in rest] + [[("x", i) for i in g] for g in group_x if g]
    atom_size = {("x", i): x.shape[i] for i in range(x.ndim)}
    # stored weight dims: stack dims, then the in group (K), then the out group (N)
    w_atoms = []
    for d in range(L):
        w_atoms.append([("x", role[d][1])] if d in role else [("w", d)])
        atom_size[("w", d)] = w.shape[d]
    for dims, kind, g in zip(groups, kinds, group_x):
        if kind == "f":
            w_atoms.append([("w", logical_of[c]) for c in dims])
            atom_size.update({("w", logical_of[c]): sizes[c - L] for c in dims})
        else:
            w_atoms.append([("x", i) for i in g])
    stored_c, stored_b = [], []
    for d in range(L):
        if d in role:
            (stored_c if role[d][0] == "c" else stored_b).append((x_pos[role[d][1]], d))
    for s, (kind, g) in enumerate(zip(kinds, group_x)):
        if kind != "f":
            (stored_c if kind == "c" else stored_b).append((x_pos[g[0]], L + s))
    stored_b.sort()  # batch dims in x' order: the output's batch dims follow
    stored_dn = ((tuple(p[0] for p in stored_c), tuple(p[1] for p in stored_c)),
                 (tuple(p[0] for p in stored_b), tuple(p[1] for p in stored_b)))
    out = _stored_dot(xt, w, stored_dn, dot_params)
    xc2, xb2 = set(stored_dn[0][0]), [p[0] for p in stored_b]
    w_used = {p[1] for p in stored_c + stored_b}
    out_atoms = ([a for i in xb2 for a in x_atoms[i]]
                 + [a for i in range(len(x_atoms)) if i not in xc2 and i not in xb2 for a in x_atoms[i]]
                 + [a for d in range(L + 2) if d not in w_used for a in w_atoms[d]])
    out = out.reshape([atom_size[a] for a in out_atoms])
    x_free = [("x", i) for i in range(x.ndim) if i not in xc and i not in xb]
    w_free = [("w", d) for d in range(w.ndim) if d not in wc and d not in wb]
    target = [("x", i) for i in xb] + (w_free + x_free if weight_on_left else x_free + w_free)
    perm = tuple(out_atoms.index(a) for a in target)
    return out if perm == tuple(range(len(perm))) else lax.transpose(out, perm)


@primitive_handler("dot_general")
def _dot_weight_right(primitive, x: jax.Array, w: Int4Weight, *, dimension_numbers, **params):
    return int4_dot(jnp.asarray(x), w, dimension_numbers, weight_on_left=False, params=params)


@primitive_handler("dot_general")
def _dot_weight_left(primitive, w: Int4Weight, x: jax.Array, *, dimension_numbers, **params):
    return int4_dot(jnp.asarray(x), w, dimension_numbers, weight_on_left=True, params=params)


__all__ = ["CPU_MIN_CHUNKS", "CPU_TILE_BYTES", "DOT_FORM", "KERNEL_MAX_ROWS", "chunk_count", "form", "int4_dot"]
