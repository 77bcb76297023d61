"""The StableHLO pass: complete the axis-name annotations of a lowered module.

The ``named_axes`` tag lowers to an identity ``stablehlo.convert`` that carries the names as
``mhlo.frontend_attributes``. This pass copies them onto the op that produced the value
(and onto a ``sdy.sharding_constraint`` that consumes it), names the entry function's
arguments and results, and reports what is named. The edited module is a clone: JAX's
cached lowering is never touched (editing it in place would change what a later plain
``jax.jit`` of the same function computes).
"""

from __future__ import annotations

import copy
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
                    report.producers_named += 1
                for use in op.results[0].uses:
                    user = use.owner
                    if _kind(user) == "sdy.sharding_constraint" and _get_names(user) is None:
                        _set_frontend(user, names)
            return ir.WalkResult.ADVANCE

        module.operation.walk(visit, ir.WalkOrder.PRE_ORDER)
        if main is not None:
            report.arguments_named = _name_entry_attrs(main, "arg_attrs", arg_names)
            report.results_named = _name_entry_attrs(main, "res_attrs", result_names)

        def count_unnamed(op):
            op = op.opview if hasattr(op, "opview") else op
            kind = _kind(op)
            if kind.startswith("stablehlo.") and len(op.results) == 1 and _rank(op.results[0]) > 0 and \
                    kind not in ("stablehlo.constant", "stablehlo.convert") and _get_names(op) is None:
                report.unnamed_producers[kind] = report.unnamed_producers.get(kind, 0) + 1
            return ir.WalkResult.ADVANCE

        module.operation.walk(count_unnamed, ir.WalkOrder.PRE_ORDER)
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


def with_module(lowered: jax.stages.Lowered, module: ir.Module) -> jax.stages.Lowered:
    """A copy of ``lowered`` that compiles ``module`` instead of JAX's own lowering.

    Relies on three private attributes of jax 0.10's ``Lowered``/``MeshComputation``
    (``_lowering``, ``_hlo``, ``_executable``); checked by the tests.

    >>> import jax, jax.numpy as jnp
    >>> lowered = jax.jit(lambda x: x * 2).lower(jnp.zeros(2))
    >>> lowered2 = with_module(lowered, clone(lowered.compiler_ir("stablehlo")))
    >>> lowered2.compile()(jnp.ones(2)).tolist(), lowered2.compiler_ir("stablehlo") is lowered.compiler_ir("stablehlo")
    ([2.0, 2.0], False)
    """
    lowering = copy.copy(lowered._lowering)
    lowering._hlo = module
    lowering._executable = None
    out = copy.copy(lowered)
    out._lowering = lowering
    return out


def annotated(lowered: jax.stages.Lowered, arg_names=None, result_names=None
              ) -> tuple[jax.stages.Lowered, AnnotationReport]:
    """``lowered`` with a clone of its module annotated by :func:`annotate`.

    >>> import jax, jax.numpy as jnp, namax as nx
    >>> f = lambda x: nx.sin(nx.named(x, ("batch", "embed"))).array
    >>> lowered, report = annotated(jax.jit(f).lower(jnp.zeros((4, 2))), result_names=[("batch", "embed")])
    >>> print(report)
    named_axes tags: 2, producers named: 1, arguments named: 0, results named: 1
    >>> 'jax.result_info = "result", mhlo.frontend_attributes = {named_axes = "batch,embed"}' in lowered.as_text()
    True
    """
    module = clone(lowered.compiler_ir("stablehlo"))
    report = annotate(module, arg_names, result_names)
    return with_module(lowered, module), report
