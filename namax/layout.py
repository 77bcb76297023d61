"""Layout by name: which stored axis order and ``dot_general`` form each backend runs fastest.

A NamedArray's stored order is just its ``axes`` order, so namax may store a weight and
order a contraction's operands however the backend likes without changing what the user
sees. The choices live in one table, ``LAYOUTS``, keyed by ``jax.default_backend()``:

* ``weight_out_first``: ``nn.Linear`` stores its weight ``Out + In`` (True) or ``In + Out``.
  With activations ``x[..., In]`` the forward dot is ``x . W^T`` (contract both last dims,
  "NT") or ``x . W`` ("NN").
* ``vocab_first``: ``nn.Embedding`` stores its table ``(Vocab, *Embed)`` (True) or
  ``(*Embed, Vocab)``.
* ``lhs_contract_last``: the left operand of an emitted ``dot_general`` should have its
  contracting dims last (never a transposed-LHS dot, which XLA:CPU runs off its fast GEMM
  path when no output transpose lets it swap the operands back).
* ``skinny_rows`` / ``skinny_min_weight``: when one operand of a plain (batch-free)
  contraction has at most ``skinny_rows`` rows (the product of its free dims) and the other
  has at least ``skinny_min_weight`` elements, both with their contracting dims last, the
  big operand goes on the left: ``dot(W, x)`` gives ``[W free, x free]``, transposed to
  the wanted order behind an ``optimization_barrier`` (without it XLA folds the transpose
  back into ``dot(x, W)``). 0 turns the rule off.

``dot_operands`` applies the last rule to a two-operand contraction; ``weight_axes`` and
``embedding_axes`` apply the first two.

>>> import namax as nx
>>> In, Out = nx.Axis("embed", 4), nx.Axis("mlp", 8)
>>> [a.name for a in weight_axes(In, Out, backend="cpu")]
['mlp', 'embed']
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional, Sequence

import jax

from .axis import Axis, AxisSpec, ensure_tuple
from .named import NamedArray, _axes_str


@dataclasses.dataclass(frozen=True)
class DotLayout:
    """One backend's row of the layout table (see the module docstring).

    >>> row = LAYOUTS["cpu"]
    >>> row.weight_out_first, row.vocab_first, row.skinny_rows, row.measured
    (True, True, 16, True)
    """

    weight_out_first: bool
    vocab_first: bool
    lhs_contract_last: bool
    skinny_rows: int
    skinny_min_weight: int
    measured: bool
    evidence: str


# Measured on this project's 2-core XLA:CPU host (jax 0.10.2; dots run as YNNPACK fusions)
# with `python benchmarks/layout.py --runs 7 --steps 3` plus two probe scripts: interleaved
# medians, ratios within one run. The host was shared (load average 6-8 on 2 cores), so
# single ratios move by +-30%; the ranges below span three or four runs.
#   ratio NT (W stored (out, in), contract both last dims) / NN (W stored (in, out), x @ W):
#     batch, width    forward        forward + backward (dW and dx)
#     1, 1024         0.3-2.1x       0.13-0.21x
#     1, 2048-4096    0.32-0.82x     0.18-0.45x   (NN's dW outer product is a slow non-GEMM dot)
#     16, 1024-4096   1.06-2.07x     0.87-1.26x   (a quieter host earlier gave 0.43-0.57x fwd)
#     256, 1024-4096  0.98-1.24x     0.95-1.11x
#   NT wins big at batch 1 (decoding) and for training at batch 1, ties at batch 256 and for
#   training at batch 16; forward-only at batch 16 it lost 1.1-2x in these runs. One stored
#   order has to serve both passes, so the CPU row keeps NT (weight_out_first=True).
#   XLA:CPU canonicalises 2-D dots itself: dot(W, x) followed by .T compiles to the same HLO
#   as dot(x, W^T), and a transposed-LHS dot followed by .T to the same as x . W. A
#   transposed-LHS dot whose result is *not* transposed back stays a plain (non-YNN) dot: in
#   the backward pass dW = g^T . x is such a dot in both layouts (it contracts the batch dim,
#   leading in both operands, so no operand order avoids it).
#   Batched dots whose batch dims are not leading get transpose copies of both operands
#   before the YNN fusion, whichever operand order is emitted; with leading batch dims and
#   both contracting dims last (q . k^T) the fusion takes the operands as they are.
#   Embedding tables stay (vocab, embed): a lookup reads contiguous rows, and unembed is
#   then the NT form x . E^T.
#   Skinny activations (measured on a quiet host, 2026-11-23, medians of 9): with W stored
#   (out, in), dot(W, x) contracting both last dims then a transpose behind an
#   optimization_barrier ran, vs naive x @ W (in, out):
#     batch, width    forward        forward + backward
#     16, 2048        0.53-0.59x     0.59x
#     16, 4096        0.53x          0.90x
#     16, 1024        1.01-1.04x     -
#     4, 1024         1.14x          -
#     1, 1024-2048    0.57-0.87x     0.21x
#   while dot(x, W^T) (what the transpose folds back to without the barrier) ran 1.2-1.7x
#   at batch 4-16 (2.5x at batch 4, width 1024). At batch 256 every form is within 1.06x.
#   Hence skinny_rows=16 and skinny_min_weight=2**20 elements (1024²). No form measured
#   beat naive x @ W by more than 0.8x at width 1024 (a 4 MiB weight, L3-resident).
LAYOUTS: dict[str, DotLayout] = {
    "cpu": DotLayout(weight_out_first=True, vocab_first=True, lhs_contract_last=True, skinny_rows=16,
                     skinny_min_weight=2 ** 20, measured=True,
                     evidence="XLA:CPU, see the comment above LAYOUTS"),
    # Unmeasured: XLA's GPU and TPU dot emitters canonicalise operand layouts with their own
    # layout assignment; these rows keep the conventional choices until someone measures them.
    "gpu": DotLayout(weight_out_first=True, vocab_first=True, lhs_contract_last=True, skinny_rows=0,
                     skinny_min_weight=0, measured=False,
                     evidence="unmeasured"),
    "tpu": DotLayout(weight_out_first=True, vocab_first=True, lhs_contract_last=True, skinny_rows=0,
                     skinny_min_weight=0, measured=False,
                     evidence="unmeasured"),
}


def layout_for(backend: Optional[str] = None) -> DotLayout:
    """The table row for ``backend`` (default: ``jax.default_backend()``).

    >>> layout_for("cpu").weight_out_first
    True
    """
    name = backend if backend is not None else jax.default_backend()
    if name not in LAYOUTS:
        raise ValueError(f"layout_for: no layout row for backend {name!r}; known: {sorted(LAYOUTS)}")
    return LAYOUTS[name]


def weight_axes(In: AxisSpec, Out: AxisSpec, backend: Optional[str] = None,
                out_first: Optional[bool] = None) -> tuple[Axis, ...]:
    """The stored axis order of a ``Linear`` weight: ``Out + In`` or ``In + Out``.

    ``out_first`` overrides the table when given.

    >>> import namax as nx
    >>> [a.name for a in weight_axes(nx.Axis("a", 2), nx.Axis("b", 3), out_first=False)]
    ['a', 'b']
    """
    ins, outs = ensure_tuple(In), ensure_tuple(Out)
    first = layout_for(backend).weight_out_first if out_first is None else out_first
    return tuple(outs + ins) if first else tuple(ins + outs)


def embedding_axes(Vocab: Axis, Embed: AxisSpec, backend: Optional[str] = None) -> tuple[Axis, ...]:
    """The stored axis order of an ``Embedding`` table: ``(Vocab, *Embed)`` or ``(*Embed, Vocab)``.

    >>> import namax as nx
    >>> [a.name for a in embedding_axes(nx.Axis("vocab", 9), nx.Axis("embed", 4), backend="cpu")]
    ['vocab', 'embed']
    """
    embed = ensure_tuple(Embed)
    return (Vocab, *embed) if layout_for(backend).vocab_first else (*embed, Vocab)


def match_stored(value: NamedArray, template: NamedArray) -> NamedArray:
    """``value`` rearranged to ``template``'s stored axis order, matching axes by name.

    Loading a checkpoint saved under another layout: the tensor's recorded axis names say
    which dim is which, so a layout change is a transpose, never a misread.

    >>> import namax as nx
    >>> A, C = nx.Axis("a", 2), nx.Axis("c", 3)
    >>> match_stored(nx.ones((A, C)), nx.zeros((C, A))).axis_names
    ('c', 'a')
    """
    have, want = value.axis_names, template.axis_names
    if sorted(have) != sorted(want):
        raise ValueError(f"match_stored: the value has axes {_axes_str(value.axes)} but the template wants "
                         f"{_axes_str(template.axes)}")
    for a in template.axes:
        if value.axis_size(a.name) != a.size:
            raise ValueError(f"match_stored: axis {a.name!r} has size {value.axis_size(a.name)} but the "
                             f"template wants size {a.size}")
    return value if have == want else value.rearrange(template.axes)


DimensionNumbers = tuple[tuple[tuple[int, ...], tuple[int, ...]], tuple[tuple[int, ...], tuple[int, ...]]]


@dataclasses.dataclass(frozen=True)
class DotPlan:
    """How to emit a two-operand contraction: swap the operands?, dims, result order, and
    whether the transpose to the wanted order must sit behind an ``optimization_barrier``.

    >>> plan = dot_operands(("batch", "in"), ("out", "in"), ["in"], ["batch", "out"], backend="cpu")
    >>> plan.dimension_numbers, plan.produced
    ((((1,), (1,)), ((), ())), ('batch', 'out'))
    """

    swap: bool
    dimension_numbers: DimensionNumbers
    produced: tuple[str, ...]
    barrier: bool = False


def _plan(lhs: Sequence[str], rhs: Sequence[str], contracted: Sequence[str], swap: bool) -> DotPlan:
    both = [n for n in lhs if n in contracted and n in rhs]  # lhs order keeps them contiguous
    batch = [n for n in lhs if n in rhs and n not in contracted]
    dims = ((tuple(lhs.index(n) for n in both), tuple(rhs.index(n) for n in both)),
            (tuple(lhs.index(n) for n in batch), tuple(rhs.index(n) for n in batch)))
    produced = tuple(batch + [n for n in lhs if n not in rhs] + [n for n in rhs if n not in lhs])
    return DotPlan(swap, dims, produced)


def _contract_last(names: Sequence[str], dims: tuple[int, ...]) -> bool:
    """Whether ``dims`` are the trailing dims of an operand with axes ``names`` (in some order)."""
    n = len(names)
    return sorted(dims) == list(range(n - len(dims), n))


def _lhs_transposed(names: Sequence[str], dims: DimensionNumbers) -> bool:
    """Whether the lhs's contracting dims are not its trailing dims."""
    contracting = dims[0][0]
    n = len(names)
    return bool(contracting) and tuple(contracting) != tuple(range(n - len(contracting), n))


def _skinny_plan(a: Sequence[str], b: Sequence[str], contracted: Sequence[str], want: tuple,
                 sizes: Mapping[str, int], row: DotLayout) -> Optional[DotPlan]:
    """The big-operand-first plan for a skinny times big contraction, if the row's rule applies."""
    if not row.skinny_rows or any(n in b for n in a if n not in contracted):
        return None  # rule off, or a batch dim

    def free(names: Sequence[str]) -> int:
        return math.prod(sizes[n] for n in names if n not in contracted)

    for big, small, swap in ((a, b, False), (b, a, True)):
        if free(small) > row.skinny_rows or math.prod(sizes[n] for n in big) < row.skinny_min_weight:
            continue
        plan = _plan(big, small, contracted, swap)
        (lc, rc), _ = plan.dimension_numbers
        if _contract_last(big, lc) and _contract_last(small, rc) and list(lc) == sorted(lc):
            return dataclasses.replace(plan, barrier=plan.produced != want and free(small) > 1)
    return None


def dot_operands(a: Sequence[str], b: Sequence[str], contracted: Sequence[str], want: Sequence[str],
                 backend: Optional[str] = None, sizes: Optional[Mapping[str, int]] = None) -> DotPlan:
    """Choose the operand order and dimension numbers for contracting ``a`` with ``b``.

    ``a`` and ``b`` are the operands' axis names (every name in ``contracted`` is in both),
    ``want`` the result's names, ``sizes`` the axis sizes (needed for the skinny rule). A
    skinny-times-big contraction puts the big operand first (the row's ``skinny_rows``
    rule); otherwise prefers, in order: an lhs whose contracting dims are last (if the
    backend's row asks for it), then a result already in ``want``'s order (no transpose),
    then the order given.

    >>> dot_operands(("in", "batch"), ("out", "in"), ["in"], ["batch", "out"], backend="cpu").swap
    True
    >>> plan = dot_operands(("batch", "in"), ("out", "in"), ["in"], ["batch", "out"], backend="cpu",
    ...                     sizes={"batch": 16, "in": 2048, "out": 2048})
    >>> plan.swap, plan.produced, plan.barrier
    (True, ('out', 'batch'), True)
    """
    row = layout_for(backend)
    want = tuple(want)
    skinny = None if sizes is None else _skinny_plan(a, b, contracted, want, sizes, row)
    if skinny is not None:
        return skinny

    def cost(p: DotPlan) -> tuple[int, int, int]:
        lhs = b if p.swap else a
        return (int(row.lhs_contract_last and _lhs_transposed(lhs, p.dimension_numbers)),
                int(p.produced != want), int(p.swap))

    return min((_plan(a, b, contracted, False), _plan(b, a, contracted, True)), key=cost)


__all__ = ["DotLayout", "DotPlan", "LAYOUTS", "dot_operands", "embedding_axes", "layout_for", "match_stored",
           "weight_axes"]
