"""The StableHLO pass: complete the axis-name annotations of a lowered module.

The ``named_axes`` tag lowers to an identity ``stablehlo.convert`` that carries the names as
``mhlo.frontend_attributes``. This pass copies them onto the op that produced the value
(and onto a ``sdy.sharding_constraint`` that consumes it), names the entry function's
arguments and results, and reports what is named. It only adds attributes, so it may edit
the module of namedjit's own lowering in place (``Lowered.compiler_ir`` is that module:
``compile()`` then builds the annotated program); it is idempotent, so a cached lowering
annotated twice stays the same. Anything that changes what the program computes must
work on a :func:`clone` instead: JAX caches the module with the function.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import jax
from jax.extend.mlir import ir

from ..tag import ATTRIBUTE, attribute_text

FRONTEND = "mhlo.frontend_attributes"


@dataclasses.dataclass
class AnnotationReport:
    """What the pass saw: tags found, producers named, arguments/results named.

    >>> print(AnnotationReport(tags=3, producers_named=2, unnamed_producers={"stablehlo.iota": 1}))
    named_axes tags: 3, producers named: 2, arguments named: 0, results named: 0
    ops producing a value without names: stablehlo.iota x1
    """

    tags: int = 0
    producers_named: int = 0
    arguments_named: int = 0
    results_named: int = 0
    unnamed_producers: dict[str, int] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"named_axes tags: {self.tags}, producers named: {self.producers_named}, "
                 f"arguments named: {self.arguments_named}, results named: {self.results_named}"]
        if self.unnamed_producers:
            lines.append("ops producing a value without names: " +
                         ", ".join(f"{k} x{v}" for k, v in sorted(self.unnamed_producers.items())))
        return "\n".join(lines)


def _get_names(op) -> Optional[str]:
    if FRONTEND not in op.attributes:
        return None
    attrs = ir.DictAttr(op.attributes[FRONTEND])
    if ATTRIBUTE not in attrs:
        return None
    return ir.StringAttr(attrs[ATTRIBUTE]).value


def _set_frontend(op_or_attrs_owner, names: str, key: str = ATTRIBUTE) -> None:
    attrs = {}
    if FRONTEND in op_or_attrs_owner.attributes:
        old = ir.DictAttr(op_or_attrs_owner.attributes[FRONTEND])
        attrs = {old[i].name: old[i].attr for i in range(len(old))}
    attrs[key] = ir.StringAttr.get(names)
    op_or_attrs_owner.attributes[FRONTEND] = ir.DictAttr.get(attrs)


def _kind(op) -> str:
    """The op's dialect name, e.g. ``stablehlo.add`` (``OpView.name`` may be a symbol name)."""
    return op.operation.name


def _is_identity_tag(op) -> bool:
    return _kind(op) == "stablehlo.convert" and _get_names(op) is not None and \
        op.operands[0].type == op.results[0].type


def clone(module: ir.Module) -> ir.Module:
    """A deep copy of ``module`` in the same context.

    >>> import jax, jax.numpy as jnp
    >>> module = jax.jit(jnp.sin).lower(jnp.zeros(2)).compiler_ir("stablehlo")
    >>> copy = clone(module)
    >>> copy is module, str(copy) == str(module), copy.context is module.context
    (False, True, True)
    """
    with module.context:
        return ir.Module.parse(module.operation.get_asm(enable_debug_info=True))


def annotate(module: ir.Module, arg_names: Optional[Sequence[Optional[Sequence[Optional[str]]]]] = None,
             result_names: Optional[Sequence[Optional[Sequence[Optional[str]]]]] = None) -> AnnotationReport:
    """Annotate ``module`` in place (give it a clone); returns what was named.

    ``arg_names``/``result_names``: per flattened argument/result of the entry function,
    the axis names (or None).

    >>> import jax, jax.numpy as jnp, namax as nx
    >>> f = lambda x: nx.sin(nx.named(x, ("batch", "embed"))).array
    >>> module = clone(jax.jit(f).lower(jnp.zeros((4, 2))).compiler_ir("stablehlo"))
    >>> print(annotate(module, arg_names=[("batch", "embed")]))
    named_axes tags: 2, producers named: 1, arguments named: 1, results named: 0
    >>> print(next(line.strip() for line in str(module).splitlines() if "sine" in line))
    %1 = stablehlo.sine %0 {mhlo.frontend_attributes = {named_axes = "batch,embed"}} : tensor<4x2xf32>
    """
    report = AnnotationReport()
    with module.context:
        main = _entry(module)

        def visit(op):
            op = op.opview if hasattr(op, "opview") else op
            if _is_identity_tag(op):
                report.tags += 1
                names = _get_names(op)
                src = op.operands[0]
                owner = src.owner
                if isinstance(owner, ir.Block):
                    return ir.WalkResult.ADVANCE
                owner = owner.opview if hasattr(owner, "opview") else owner
                if len(owner.results) == 1 and _get_names(owner) is None:
                    _set_frontend(owner, names)
                for use in op.results[0].uses:
                    user = use.owner
                    if _kind(user) == "sdy.sharding_constraint" and _get_names(user) is None:
                        _set_frontend(user, names)
            return ir.WalkResult.ADVANCE

        module.operation.walk(visit, ir.WalkOrder.PRE_ORDER)
        if main is not None:
            report.arguments_named = _name_entry_attrs(main, "arg_attrs", arg_names)
            report.results_named = _name_entry_attrs(main, "res_attrs", result_names)

        def count_producers(op):
            op = op.opview if hasattr(op, "opview") else op
            kind = _kind(op)
            if not kind.startswith("stablehlo.") or len(op.results) != 1 or _rank(op.results[0]) == 0 \
                    or kind == "stablehlo.constant" or _is_identity_tag(op):
                return ir.WalkResult.ADVANCE
            if _get_names(op) is not None:
                report.producers_named += 1
            elif kind != "stablehlo.convert":
                report.unnamed_producers[kind] = report.unnamed_producers.get(kind, 0) + 1
            return ir.WalkResult.ADVANCE

        module.operation.walk(count_producers, ir.WalkOrder.PRE_ORDER)
        if not module.operation.verify():
            raise RuntimeError("namax StableHLO pass produced an invalid module")
    return report


def _rank(value) -> int:
    try:
        return ir.RankedTensorType(value.type).rank
    except (ValueError, TypeError):
        return 0


def _entry(module: ir.Module):
    for op in module.body.operations:
        if _kind(op) == "func.func" and ir.StringAttr(op.attributes["sym_name"]).value == "main":
            return op
    return None


def _name_entry_attrs(func, key: str, names) -> int:
    if not names:
        return 0
    ftype = ir.FunctionType(ir.TypeAttr(func.attributes["function_type"]).value)
    n_entries = len(ftype.inputs if key == "arg_attrs" else ftype.results)
    if key in func.attributes:
        old = list(ir.ArrayAttr(func.attributes[key]))
    else:
        old = [ir.DictAttr.get({})] * n_entries
    if len(old) != len(names):
        return 0
    new, count = [], 0
    for entry, n in zip(old, names):
        d = ir.DictAttr(entry)
        items = {d[i].name: d[i].attr for i in range(len(d))}
        if n is not None:
            frontend = {}
            if FRONTEND in items:
                f = ir.DictAttr(items[FRONTEND])
                frontend = {f[i].name: f[i].attr for i in range(len(f))}
            frontend[ATTRIBUTE] = ir.StringAttr.get(attribute_text(n))
            items[FRONTEND] = ir.DictAttr.get(frontend)
            count += 1
        new.append(ir.DictAttr.get(items))
    func.attributes[key] = ir.ArrayAttr.get(new)
    return count


def annotated(lowered: jax.stages.Lowered, arg_names=None, result_names=None
              ) -> tuple[jax.stages.Lowered, AnnotationReport]:
    """``lowered`` with its own module annotated in place by :func:`annotate` (attributes
only: what it computes is unchanged), and the report. Give it namedjit's lowering, whose
module no plain ``jax.jit`` shares.

    >>> import jax, jax.numpy as jnp, namax as nx
    >>> f = lambda x: nx.sin(nx.named(x, ("batch", "embed"))).array
    >>> lowered, report = annotated(jax.jit(f).lower(jnp.zeros((4, 2))), result_names=[("batch", "embed")])
    >>> print(report)
    named_axes tags: 2, producers named: 1, arguments named: 0, results named: 1
    >>> 'jax.result_info = "result", mhlo.frontend_attributes = {named_axes = "batch,embed"}' in lowered.as_text()
    True
    """
    report = annotate(lowered.compiler_ir("stablehlo"), arg_names, result_names)
    return lowered, report
