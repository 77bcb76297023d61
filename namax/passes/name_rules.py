"""Per-primitive rules of the names pass: how each primitive ties its output dims to its inputs.

A rule sees the :class:`~namax.passes.names.NamesInterpreter`, the equation and, for each
input, the tuple of its dimension nodes; it returns one tuple of nodes per output. Returning
an input's node for an output dim says "same axis"; :meth:`NamesInterpreter.unify` joins two
nodes; :meth:`NamesInterpreter.fresh` makes nodes that nothing constrains yet. ``unify``
ignores pairs of different sizes, which is exactly size-1 broadcasting, so the rules below
only have to say which positions correspond.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

from jax.extend import core as jcore

from ..tag import named_axes_p

if TYPE_CHECKING:
    from .names import NamesInterpreter

NameRule = Callable[["NamesInterpreter", jcore.JaxprEqn, list], list]


# --- shape-preserving ----------------------------------------------------------------


def elementwise(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """Every output dim is the same axis as the input dims at its position (rank-0 inputs broadcast).

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda x, y: x * y + 1.0)(jnp.ones((2, 3)), jnp.ones((2, 3)))
    >>> infer(cj, [("batch", "embed"), None]).in_names  # y gets x's names
    [('batch', 'embed'), ('batch', 'embed')]
    """
    outs = [it.fresh(v.aval) for v in eqn.outvars]
    for out in outs:
        for x in ins:
            if len(x) == len(out):
                it.unify_dims(x, out)
    return outs


def identity(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """Output ``i`` is input ``i`` (sharding constraints, copies, barriers, stop_gradient).

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(jax.lax.optimization_barrier)(jnp.ones((2, 3)))
    >>> infer(cj, [("batch", "embed")]).out_names
    [('batch', 'embed')]
    """
    return list(ins[: len(eqn.outvars)])


def same_as_first(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """One output shaped and named like the first input (cumulative ops, ``rev``).

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda x: jnp.cumsum(x, axis=1))(jnp.ones((2, 3)))
    >>> infer(cj, [("batch", "position")]).out_names
    [('batch', 'position')]
    """
    return [ins[0]]


def sort(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """All operands and results of a (multi-operand) sort share their axes.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda x: jnp.sort(x, axis=1))(jnp.ones((2, 3)))
    >>> infer(cj, [("batch", "vocab")]).out_names
    [('batch', 'vocab')]
    """
    for x in ins[1:]:
        it.unify_dims(ins[0], x)
    return [ins[0]] * len(eqn.outvars)


def leading(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """Outputs share the first input's leading dims (PRNG keys: ``random_wrap``, ``random_bits``, ...).

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(jax.vmap(jax.random.split))(jax.random.split(jax.random.key(0), 4))
    >>> infer(cj, [("batch",)]).out_names
    [('batch', None)]
    """
    outs = [it.fresh(v.aval) for v in eqn.outvars]
    for out in outs:
        it.unify_dims(ins[0], out)
    return outs


def no_constraint(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """Outputs unrelated to the inputs (``iota``, random number generation).

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda x: (x, jnp.arange(3)))(jnp.ones(3))
    >>> infer(cj, [("embed",)]).out_names
    [('embed',), (None,)]
    """
    return [it.fresh(v.aval) for v in eqn.outvars]


def bitcast_convert_type(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """Same rank: elementwise; a changed width adds or drops the last dim.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda x: jax.lax.bitcast_convert_type(x, jnp.uint8))(jnp.ones((2, 3)))
    >>> infer(cj, [("batch", "embed")]).out_names
    [('batch', 'embed', None)]
    """
    (x,) = ins
    out = it.fresh(eqn.outvars[0].aval)
    it.unify_dims(x[: len(out)], out[: len(x)])
    return [out]


# --- shape-changing ------------------------------------------------------------------


def broadcast_in_dim(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """Operand dim ``i`` becomes output dim ``broadcast_dimensions[i]`` unless it broadcasts from 1.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda x: jnp.broadcast_to(x, (4, 3)))(jnp.ones(3))
    >>> infer(cj, [("embed",)]).out_names
    [(None, 'embed')]
    """
    out = it.fresh(eqn.outvars[0].aval)
    for i, d in enumerate(eqn.params["broadcast_dimensions"]):
        it.unify(ins[0][i], out[d])
    return [out]


def transpose(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """Output dim ``i`` is operand dim ``permutation[i]``.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda x: x.T)(jnp.ones((2, 3)))
    >>> infer(cj, [("batch", "embed")]).out_names
    [('embed', 'batch')]
    """
    return [tuple(ins[0][p] for p in eqn.params["permutation"])]


def squeeze(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """The removed size-1 dims vanish, the rest map through.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda x: jnp.squeeze(x, 1))(jnp.ones((2, 1, 3)))
    >>> infer(cj, [("batch", None, "embed")]).out_names
    [('batch', 'embed')]
    """
    gone = {d % len(ins[0]) for d in eqn.params["dimensions"]}
    return [tuple(n for i, n in enumerate(ins[0]) if i not in gone)]


def reshape(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """Split and merge dims by matching running products; size-1 dims are ignored.

    Groups of input and output dims whose sizes multiply to the same number correspond:
    one to one they unify; several inputs into one output make that output a *composite*
    of the inputs (its name reads ``('batch', 'position')``); one input into several
    outputs makes the input a composite of the outputs, so splitting a merged dim recovers
    the original names, and splitting a named dim names its major part after it
    (``x.reshape(b, s, heads, head_dim)`` of an ``embed`` dim: the heads dim is ``embed``,
    head_dim stays unnamed; see :mod:`namax.passes.names`). Groups that both split and
    merge are left unrelated.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda x: x.reshape(6))(jnp.ones((2, 3)))
    >>> infer(cj, [("batch", "position")]).out_names
    [(('batch', 'position'),)]
    """
    x = ins[0]
    if eqn.params.get("dimensions") is not None:
        x = tuple(x[d] for d in eqn.params["dimensions"])
    out = it.fresh(eqn.outvars[0].aval)
    src = [n for n in x if it.size(n) != 1]
    dst = [n for n in out if it.size(n) != 1]
    if any(it.size(n) == 0 for n in src + dst):
        return [out]
    for group_in, group_out in _product_groups(src, dst, it.size):
        if len(group_in) == 1 and len(group_out) == 1:
            it.unify(group_in[0], group_out[0])
        elif len(group_out) == 1:
            it.compose(group_out[0], group_in)
        elif len(group_in) == 1:
            it.compose(group_in[0], group_out)
    return [out]


def _product_groups(src: Sequence[int], dst: Sequence[int], size: Callable[[int], int]):
    """Split two dim lists into consecutive groups with equal size products."""
    i = j = 0
    while i < len(src) and j < len(dst):
        gi, gj = [src[i]], [dst[j]]
        pi, pj = size(src[i]), size(dst[j])
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj and i < len(src):
                pi *= size(src[i])
                gi.append(src[i])
                i += 1
            elif pj < pi and j < len(dst):
                pj *= size(dst[j])
                gj.append(dst[j])
                j += 1
            else:
                return
        yield gi, gj


def reduce_axes(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """``reduce_*``/``argmax``/``argmin``: the reduced ``axes`` vanish.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda x: jnp.argmax(x, axis=1))(jnp.ones((2, 3)))
    >>> infer(cj, [("batch", "vocab")]).out_names
    [('batch',)]
    """
    gone = set(eqn.params["axes"])
    return [tuple(n for i, n in enumerate(ins[0]) if i not in gone)]


def reduce(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """Generic ``reduce`` (operands then init values): operands share axes, ``dimensions`` vanish.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda x: jax.lax.reduce(x, 0.0, lambda a, b: a + 2 * b, (1,)))(jnp.ones((2, 3)))
    >>> infer(cj, [("batch", "vocab")]).out_names
    [('batch',)]
    """
    k = len(eqn.outvars)
    operands = ins[:k]
    for x in operands[1:]:
        it.unify_dims(operands[0], x)
    gone = set(eqn.params["dimensions"])
    return [tuple(n for i, n in enumerate(x) if i not in gone) for x in operands]


def concatenate(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """All dims but the concatenated one unify; the concatenated dim is a new, unnamed axis,
    unless the pieces were cut (sliced or split) from one dim and cover it whole: then it
    is that dim (split-then-concatenate, as in rotary embeddings, keeps its name).

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda x: jnp.concatenate(jnp.split(x, 2, axis=1)[::-1], axis=1))(jnp.ones((2, 4)))
    >>> infer(cj, [("batch", "embed")]).out_names
    [('batch', 'embed')]
    """
    out = it.fresh(eqn.outvars[0].aval)
    dim = eqn.params["dimension"]
    for x in ins:
        it.unify_dims(x[:dim] + x[dim + 1:], out[:dim] + out[dim + 1:])
    source = it.solver.joined([x[dim] for x in ins])
    if source is not None:
        it.unify(source, out[dim])
    return [out]


def split(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """Pieces keep every dim but the split one, which is recorded as a cut of the input's.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda x: jnp.split(x, [1], axis=1))(jnp.ones((2, 3)))
    >>> infer(cj, [("batch", "position")]).out_names
    [('batch', None), ('batch', None)]
    """
    axis = eqn.params["axis"]
    x = ins[0]
    outs, start = [], 0
    for v in eqn.outvars:
        size = v.aval.shape[axis]
        piece = it.fresh_dim(size)
        it.cut(piece, x[axis], start, start + size)
        start += size
        outs.append(x[:axis] + (piece,) + x[axis + 1:])
    return outs


def slice_(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """``slice``: dims taken whole map through; a contiguous range of a dim is a cut of it.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda x: x[:, 1:])(jnp.ones((2, 3)))
    >>> infer(cj, [("batch", "position")]).out_names
    [('batch', None)]
    """
    out = it.fresh(eqn.outvars[0].aval)
    x = ins[0]
    strides = eqn.params["strides"] or (1,) * len(x)
    for i, (start, stop, stride) in enumerate(zip(eqn.params["start_indices"], eqn.params["limit_indices"], strides)):
        if it.size(x[i]) == it.size(out[i]):
            it.unify(x[i], out[i])
        elif stride == 1:
            it.cut(out[i], x[i], start, stop)
    return [out]


def pad(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """Unpadded dims map through; padded dims are new axes.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda x: jnp.pad(x, ((0, 0), (1, 1))))(jnp.ones((2, 3)))
    >>> infer(cj, [("batch", "position")]).out_names
    [('batch', None)]
    """
    x = ins[0]
    out = it.fresh(eqn.outvars[0].aval)
    for i, cfg in enumerate(eqn.params["padding_config"]):
        if tuple(cfg) == (0, 0, 0):
            it.unify(x[i], out[i])
    return [out]


def keep_full_dims(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """``slice``/``dynamic_slice``/``top_k``: dims taken whole (same size) map through.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda x, i: jax.lax.dynamic_slice(x, (0, i), (2, 2)))(jnp.ones((2, 3)), 1)
    >>> infer(cj, [("batch", "position"), None]).out_names
    [('batch', None)]
    """
    out = it.fresh(eqn.outvars[0].aval)
    x = ins[0]
    if len(x) == len(out):
        it.unify_dims(x, out)
    return [out] + [out] * (len(eqn.outvars) - 1)


def select_and_scatter_add(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """A pooling gradient: the result has the operand's axes; window-1 dims of the source too.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> pool = lambda x: jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2), (1, 2), 'VALID').sum()
    >>> cj = jax.make_jaxpr(jax.grad(pool))(jnp.ones((2, 4)))
    >>> infer(cj, [("batch", "position")]).out_names
    [('batch', 'position')]
    """
    source, operand = ins[0], ins[1]
    it.unify_dims(source, operand)  # same-size (unpooled) dims only
    return [operand]


def dynamic_update_slice(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """The result is the operand; update dims as large as the operand's are the same axes.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda x, y: jax.lax.dynamic_update_slice(x, y, (0, 1)))(jnp.ones((2, 3)), jnp.ones((2, 1)))
    >>> infer(cj, [("batch", "position"), None]).in_names
    [('batch', 'position'), ('batch', None)]
    """
    operand, update = ins[0], ins[1]
    it.unify_dims(operand, update)
    return [operand]


def gather(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """Offset dims that are taken whole are the operand's; batch dims are the indices'.

    Covers ``x[idx]``, ``jnp.take`` and namax indexing: the output's non-offset dims are
    the index array's dims (without its trailing index-vector dim), in order.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda table, ids: table[ids])(jnp.ones((10, 4)), jnp.zeros(3, int))
    >>> infer(cj, [("vocab", "embed"), ("token",)]).out_names
    [('token', 'embed')]
    """
    dn = eqn.params["dimension_numbers"]
    operand, indices = ins[0], ins[1]
    out = it.fresh(eqn.outvars[0].aval)
    _index_dims(it, operand, indices, out, dn.offset_dims, dn.collapsed_slice_dims,
                dn.operand_batching_dims, dn.start_indices_batching_dims)
    _pair_through_indices(it, "gather", operand, indices,
                          (dn.collapsed_slice_dims, dn.start_index_map, dn.operand_batching_dims))
    return [out]


def scatter(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """The result is the operand; window dims of the updates are the operand's, scatter dims the indices'.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda x, ids, y: x.at[ids].add(y))(jnp.ones((10, 4)), jnp.zeros(3, int), jnp.ones((3, 4)))
    >>> infer(cj, [("vocab", "embed"), ("token",), None]).in_names
    [('vocab', 'embed'), ('token',), ('token', 'embed')]
    """
    dn = eqn.params["dimension_numbers"]
    operand, indices, updates = ins[0], ins[1], ins[2]
    _index_dims(it, operand, indices, updates, dn.update_window_dims, dn.inserted_window_dims,
                dn.operand_batching_dims, dn.scatter_indices_batching_dims)
    _pair_through_indices(it, "scatter", operand, indices,
                          (dn.inserted_window_dims, dn.scatter_dims_to_operand_dims, dn.operand_batching_dims))
    return [operand]


def _pair_through_indices(it: "NamesInterpreter", kind: str, operand: tuple, indices: tuple, layout: tuple) -> None:
    """Link the operand of a scatter to that of the gather it transposes, or the reverse.

    ``jax.grad`` of ``table[ids]`` scatter-adds into zeros shaped like the table, through
    the same index array: nothing else ties the zeros to the table. A gather and a scatter
    that use one index array (the same dimension nodes: the same value) with the same
    index layout, into operands of one shape, pair up (:func:`_partner` picks among several);
    their operand dims are then linked (a name crosses only to a dim with none).
    """
    shape = tuple(it.size(n) for n in operand)
    earlier = it.recall(("indices", tuple(indices), tuple(map(tuple, layout)), shape), (kind, operand))
    partner = _partner(it, operand, [other for k, other in earlier if k != kind])
    if partner is not None:
        for a, b in zip(operand, partner):
            it.link(a, b)


def _partner(it: "NamesInterpreter", dims: tuple, candidates: Sequence[tuple]):
    """The one candidate (dims shaped like ``dims``) to pair with ``dims``: the only one, or
    the only one sharing the most axes with ``dims`` already; None when that is ambiguous."""
    options = set(candidates) - {dims}
    shared = {c: sum(it.solver.find(a) == it.solver.find(b) for a, b in zip(dims, c)) for c in options}
    best = [c for c, n in shared.items() if n == max(shared.values())]
    return best[0] if len(best) == 1 else None


def _index_dims(it: "NamesInterpreter", operand: tuple, indices: tuple, sliced: tuple, window_dims: Sequence[int],
                dropped_dims: Sequence[int], operand_batching: Sequence[int], index_batching: Sequence[int]) -> None:
    """Gather and scatter alike: ``sliced`` (the gather result or the scatter updates) has
    window dims, the operand's dims that are not dropped, in order, and its other dims are
    the index array's (without the trailing index-vector dim); batching dims pair up."""
    skipped = set(dropped_dims) | set(operand_batching)
    window = [d for d in range(len(operand)) if d not in skipped]
    for pos, d in zip(window_dims, window):
        it.unify(sliced[pos], operand[d])
    index_positions = [i for i in range(len(sliced)) if i not in set(window_dims)]
    for pos, idim in zip(index_positions, range(len(indices) - 1)):
        it.unify(sliced[pos], indices[idim])
    for d, idim in zip(operand_batching, index_batching):
        it.unify(operand[d], indices[idim])


def dot_general(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """Contracting dims unify pairwise; output = batch dims, lhs free dims, rhs free dims.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda x, w: x @ w)(jnp.ones((2, 3)), jnp.ones((3, 4)))
    >>> infer(cj, [("batch", "embed"), ("embed", "mlp")]).out_names
    [('batch', 'mlp')]
    """
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs, rhs = ins
    for a, b in zip(lc, rc):
        it.unify(lhs[a], rhs[b])
    for a, b in zip(lb, rb):
        it.unify(lhs[a], rhs[b])
    lfree = [d for d in range(len(lhs)) if d not in set(lc) | set(lb)]
    rfree = [d for d in range(len(rhs)) if d not in set(rc) | set(rb)]
    return [tuple(lhs[d] for d in lb) + tuple(lhs[d] for d in lfree) + tuple(rhs[d] for d in rfree)]


def conv_general_dilated(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """Batch and feature dims; spatial dims too when a stride-1 conv keeps their size.

    The convs ``jax.grad`` makes for a kernel's and an input's gradient are linked to the
    kernel and the input (:func:`_transposed`): a cotangent that starts as a fresh array of
    ones would otherwise leave their window and spatial dims unnamed.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1,), 'SAME')
    >>> cj = jax.make_jaxpr(conv)(jnp.ones((2, 3, 8)), jnp.ones((5, 3, 3)))
    >>> infer(cj, [("batch", "channel", "position"), ("out", "channel", None)]).out_names
    [('batch', 'out', 'position')]
    """
    p = eqn.params
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    lhs, rhs = ins
    out = it.fresh(eqn.outvars[0].aval)
    if p["batch_group_count"] == 1:
        it.unify(lhs[lhs_spec[0]], out[out_spec[0]])
        it.unify(rhs[rhs_spec[0]], out[out_spec[1]])
    if p["feature_group_count"] == 1:
        it.unify(lhs[lhs_spec[1]], rhs[rhs_spec[1]])
    kernel = _transposed(it, ("conv lhs", tuple(lhs)), rhs, out)
    image = _transposed(it, ("conv rhs", tuple(rhs)), lhs, out)
    for a, b in zip(out, kernel or image or ()):
        it.link(a, b)
    unit = lambda xs: xs is None or all(s == 1 for s in xs)
    if kernel is None and unit(p["window_strides"]) and unit(p["lhs_dilation"]):
        for ls, os in zip(lhs_spec[2:], out_spec[2:]):
            it.unify(lhs[ls], out[os])
    return [out]


def _transposed(it: "NamesInterpreter", key: tuple, operand: tuple, out: tuple):
    """The operand of an earlier conv that shares ``key`` and is shaped like ``out`` (:func:`_partner`).

    ``jax.grad`` computes a kernel's gradient as a conv of the forward input (the same
    value: the same dimension nodes) with the output's cotangent, laid out like the kernel
    (its spatial dims are window offsets, not positions); and the input's gradient as a
    conv of the cotangent with the same kernel, laid out like the input.
    """
    shape = tuple(it.size(n) for n in out)
    earlier = it.recall(key, operand)
    return _partner(it, out, [x for x in earlier if tuple(it.size(n) for n in x) == shape])


# --- the tag and sub-jaxprs ----------------------------------------------------------


def named_axes(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """A tag names its output; input and output are only softly linked (a tag can rename).

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> import namax as nx
    >>> cj = jax.make_jaxpr(lambda x: nx.named(x, ("batch", "embed")).array * 2)(jnp.ones((2, 3)))
    >>> infer(cj, None).in_names  # the tag names the input too
    [('batch', 'embed')]
    """
    out = it.fresh(eqn.outvars[0].aval)
    for node, name, src in zip(out, eqn.params["axes"], ins[0]):
        if name is not None:
            it.label(node, getattr(name, "name", name))
        it.link(src, node)
    return [out]


def call(param: str) -> NameRule:
    """A rule for call-like primitives whose sub-jaxpr ``param`` takes every input.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda x: jax.jit(jnp.sin)(x))(jnp.ones((2, 3)))
    >>> infer(cj, [("batch", "embed")]).out_names
    [('batch', 'embed')]
    """
    def rule(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
        return it.eval_sub(eqn.params[param], param, ins)
    rule.__doc__ = f"Walk the sub-jaxpr in param {param!r} with the equation's inputs."
    return rule


def scan(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """Consts pass in; carry-in = carry-out = outer carry; xs lose, ys gain, the scanned axis.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> step = lambda h, x: (jnp.tanh(h + x), h)
    >>> cj = jax.make_jaxpr(lambda h, xs: jax.lax.scan(step, h, xs))(jnp.ones(3), jnp.ones((5, 3)))
    >>> infer(cj, [None, ("position", "embed")]).out_names
    [('embed',), ('position', 'embed')]
    """
    p = eqn.params
    nc, nk = p["num_consts"], p["num_carry"]
    consts, carry, xs = ins[:nc], ins[nc:nc + nk], ins[nc + nk:]
    scanned = it.fresh_dim(p["length"])
    for x in xs:
        it.unify(x[0], scanned)
    outs = it.eval_sub(p["jaxpr"], "body", [*consts, *carry, *(x[1:] for x in xs)])
    for a, b in zip(carry, outs[:nk]):
        it.unify_dims(a, b)
    return [*carry, *((scanned,) + y for y in outs[nk:])]


def cond(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """Every branch gets the same operands and its outputs are unified with the others'.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda p, x: jax.lax.cond(p, jnp.sin, jnp.cos, x))(True, jnp.ones((2, 3)))
    >>> infer(cj, [None, ("batch", "embed")]).out_names
    [('batch', 'embed')]
    """
    branches = eqn.params["branches"]
    first = it.eval_sub(branches[0], "branch 0", ins[1:])
    for k, branch in enumerate(branches[1:], 1):
        for a, b in zip(first, it.eval_sub(branch, f"branch {k}", ins[1:])):
            it.unify_dims(a, b)
    return first


def while_loop(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """The body's carry-out is its carry-in; the condition sees the same carry.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> body = lambda c: (c[0] + 1, c[1] * 2)
    >>> cj = jax.make_jaxpr(lambda x: jax.lax.while_loop(lambda c: c[0] < 3, body, (0, x))[1])(jnp.ones((2, 3)))
    >>> infer(cj, [("batch", "embed")]).out_names
    [('batch', 'embed')]
    """
    p = eqn.params
    nc, nb = p["cond_nconsts"], p["body_nconsts"]
    cconsts, bconsts, carry = ins[:nc], ins[nc:nc + nb], ins[nc + nb:]
    it.eval_sub(p["cond_jaxpr"], "cond", [*cconsts, *carry])
    for a, b in zip(carry, it.eval_sub(p["body_jaxpr"], "body", [*bconsts, *carry])):
        it.unify_dims(a, b)
    return list(carry)


def shard_map(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """Body dims are the outer dims: unsharded ones unify, sharded (local-size) ones are linked.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> mesh = jax.sharding.Mesh(jax.devices()[:1], ('data',))
    >>> f = jax.shard_map(lambda x: x * 2, mesh=mesh, in_specs=jax.P('data'), out_specs=jax.P('data'))
    >>> cj = jax.make_jaxpr(f)(jnp.ones((4, 3)))
    >>> infer(cj, [("batch", "embed")]).out_names
    [('batch', 'embed')]
    """
    body = eqn.params["jaxpr"]

    def across(outer: tuple, local: tuple) -> None:
        for a, b in zip(outer, local):
            it.unify(a, b)  # skipped where the sizes differ (a sharded dim) ...
            it.link(a, b)   # ... which still shares its name, like a tag would

    inner = [it.fresh(v.aval) for v in body.invars]
    for x, local in zip(ins, inner):
        across(x, local)
    outs = [it.fresh(v.aval) for v in eqn.outvars]
    for y, local in zip(outs, it.eval_sub(body, "body", inner)):
        across(y, local)
    return outs


# --- the table -----------------------------------------------------------------------

ELEMENTWISE = (
    "abs acos acosh add add_any and asin asinh atan atan2 atanh bessel_i0e bessel_i1e cbrt ceil clamp "
    "clz complex conj convert_element_type cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1 floor "
    "ge gt igamma igamma_grad_a igammac imag integer_pow is_finite le lgamma log log1p logistic lt max min "
    "mul ne neg nextafter not or polygamma population_count pow random_gamma random_gamma_grad real "
    "reduce_precision regularized_incomplete_beta rem round rsqrt select_n shift_left "
    "shift_right_arithmetic shift_right_logical sign sin sinh sqrt square sub tan tanh threefry2x32 xor zeta"
).split()

IDENTITY = ("copy copy_p device_put mesh_cast name optimization_barrier pmax pmin ppermute psum psum_invariant pvary reshard "
            "sharding_constraint stop_gradient").split()

RULES: dict = {
    **{name: elementwise for name in ELEMENTWISE},
    **{name: identity for name in IDENTITY},
    **{name: same_as_first for name in "cumsum cumprod cummax cummin cumlogsumexp rev".split()},
    **{name: reduce_axes for name in
       "reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or reduce_xor argmax argmin".split()},
    **{name: scatter for name in "scatter scatter-add scatter-mul scatter-min scatter-max".split()},
    **{name: no_constraint for name in "iota rng_uniform create_token after_all".split()},
    **{name: leading for name in
       "random_bits random_fold_in random_seed random_split random_unwrap random_wrap".split()},
    "reduce": reduce,
    "sort": sort,
    "bitcast_convert_type": bitcast_convert_type,
    "broadcast_in_dim": broadcast_in_dim,
    "transpose": transpose,
    "squeeze": squeeze,
    "reshape": reshape,
    "concatenate": concatenate,
    "split": split,
    "pad": pad,
    "slice": slice_,
    "dynamic_slice": keep_full_dims,
    "top_k": keep_full_dims,
    **{name: keep_full_dims for name in "reduce_window_sum reduce_window_max reduce_window_min".split()},
    "select_and_scatter_add": select_and_scatter_add,
    "dynamic_update_slice": dynamic_update_slice,
    "gather": gather,
    "dot_general": dot_general,
    "conv_general_dilated": conv_general_dilated,
    named_axes_p: named_axes,
    "jit": call("jaxpr"),
    "pjit": call("jaxpr"),
    "remat2": call("jaxpr"),
    "checkpoint": call("jaxpr"),
    "closed_call": call("call_jaxpr"),
    "core_call": call("call_jaxpr"),
    "custom_jvp_call": call("call_jaxpr"),
    "custom_vjp_call": call("call_jaxpr"),
    "custom_vjp_call_jaxpr": call("fun_jaxpr"),
    "scan": scan,
    "cond": cond,
    "while": while_loop,
    "shard_map": shard_map,
}
"""Primitive (or primitive name) -> rule. Unlisted primitives get fresh, unnamed outputs."""
