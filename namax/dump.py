"""``namax.dump``: what namax did to a program, pass by pass, by name.

>>> import jax.numpy as jnp, namax as nx
>>> from namax.dump import dump
>>> r = dump(lambda x, w: x @ w, jnp.ones((8, 4)), jnp.ones((4, 2)),
...          in_axes=(("batch", "embed"), ("embed", "mlp")), stages="names")
>>> "f32[batch:8,mlp:2]" in r.stages["names"].text
True

The stages (see :mod:`namax.tools.stages`): ``jaxpr`` (the traced program), ``implicit``
(LoRA/int4/zeros rewritten by :mod:`namax.quant`), ``names`` (every value typed by its
axis names), ``sharding`` (PartitionSpecs and the program with constraints),
``stablehlo`` (``namedjit(...).lower()``, annotated), ``hlo`` (XLA's optimized HLO) and
``costs`` (the cost report by axis name, :mod:`namax.tools.costs`: each collective of the
compiled HLO with the names it moves, its bytes and the user's source line that caused it;
memory per device by name). The :class:`~namax.tools.summary.Summary` counts names,
implicit rewrites, collectives (with the cost report's rows), memory (and the names that
dominate it), FLOPs and the largest intermediates.

>>> r = dump(lambda x, w: x @ w, jnp.ones((8, 4)), jnp.ones((4, 2)),
...          in_axes=(("batch", "embed"), ("embed", "mlp")), stages="costs")
>>> r.costs.collectives, [m.name for m in r.costs.memory_by_name]
([], ['batch', 'embed', 'mlp'])
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
from jax.sharding import AxisType, Mesh

from .tools.stages import BUILDERS, Program, Stage, StageError
from .tools.summary import Summary, summarize


@dataclasses.dataclass
class DumpResult:
    """The stages asked for (by key, in pipeline order) and the summary.

    >>> import jax.numpy as jnp
    >>> r = dump(lambda x: x * 2, jnp.ones(3), stages="jaxpr,names")
    >>> list(r.stages), r.render().splitlines()[0]
    (['jaxpr', 'names'], '==== 1. jaxpr: the traced program (jax.make_jaxpr) ====')
    """

    stages: dict[str, Stage]
    summary: Summary
    program: Program

    @property
    def costs(self):
        """The :class:`~namax.tools.costs.CostReport`: collectives and memory per device by axis name."""
        stage = self.stages.get("costs")
        return stage.report if stage is not None else self.program.costs

    def render(self, diff: bool = False) -> str:
        """Every stage (with its diff when ``diff``), then the summary, as one text."""
        parts = [render_stage(s, diff) for s in self.stages.values()]
        parts.append("==== summary ====\n" + str(self.summary))
        return "\n\n".join(parts) + "\n"

    def write(self, directory: Union[str, os.PathLike], diff: bool = False) -> list[str]:
        """One numbered file per stage (``03-names.txt``; ``03-names.diff`` with ``diff``) and ``summary.txt``."""
        os.makedirs(directory, exist_ok=True)
        written = []
        for s in self.stages.values():
            files = [(s.filename, render_stage(s, False))]
            if diff and s.diff:
                files.append((s.filename[:-4] + ".diff", s.diff + "\n"))
            for name, text in files:
                path = os.path.join(directory, name)
                with open(path, "w") as f:
                    f.write(text)
                written.append(path)
        path = os.path.join(directory, "summary.txt")
        with open(path, "w") as f:
            f.write(str(self.summary) + "\n")
        written.append(path)
        return written

    def __str__(self) -> str:
        return self.render()


def render_stage(stage: Stage, diff: bool = False) -> str:
    """``==== 3. names: ... ====``, the notes, the text and (with ``diff``) the diff.

    >>> print(render_stage(Stage("names", "names pass", "b:f32[batch:2] = sin a", notes=["every primitive had a rule"])))
    ==== 3. names: names pass ====
    # every primitive had a rule
    b:f32[batch:2] = sin a
    """
    lines = [f"==== {stage.number}. {stage.key}: {stage.title} ===="]
    lines += [f"# {n}" for n in stage.notes]
    lines.append(stage.text.rstrip("\n"))
    if diff:
        lines.append(f"---- diff {stage.before_label} -> {stage.number:02d}-{stage.key} ----" if stage.before
                     else "---- diff: this stage does not change the program ----")
        if stage.before is not None:
            lines.append(stage.diff or "(no change)")
    return "\n".join(lines)


def parse_stages(stages: Union[str, Sequence[str]]) -> list[str]:
    """``"all"``, ``"summary"`` (no stage), one key or a comma list -> the keys in pipeline order.

    >>> parse_stages("hlo, jaxpr"), parse_stages("summary"), len(parse_stages("all"))
    (['jaxpr', 'hlo'], [], 7)
    """
    keys = stages.split(",") if isinstance(stages, str) else list(stages)
    keys = [k.strip() for k in keys if k.strip()]
    if "all" in keys:
        return list(BUILDERS)
    unknown = [k for k in keys if k not in BUILDERS and k != "summary"]
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]!r}; choose from {', '.join(BUILDERS)}, all, summary")
    return [k for k in BUILDERS if k in keys]


def make_mesh(mesh: Union[None, Mesh, Mapping[str, int]]) -> Optional[Mesh]:
    """A Mesh, or ``{"data": 4, "model": 2}`` -> an Auto-axes mesh over the first devices.

    >>> mesh = make_mesh({"data": 1})
    >>> mesh.axis_names, mesh.devices.shape, mesh.axis_types, make_mesh(None)
    (('data',), (1,), (Auto,), None)
    """
    if mesh is None or isinstance(mesh, Mesh):
        return mesh
    sizes = dict(mesh)
    need = 1
    for s in sizes.values():
        need *= int(s)
    have = len(jax.devices())
    if need > have:
        raise ValueError(f"mesh {','.join(f'{k}={v}' for k, v in sizes.items())} needs {need} devices but "
                         f"{have} are available (on CPU, --devices {need} simulates them)")
    return jax.make_mesh(tuple(sizes.values()), tuple(sizes), axis_types=(AxisType.Auto,) * len(sizes),
                         devices=jax.devices()[:need])


def dump(fn: Callable, *args: Any, stages: Union[str, Sequence[str]] = "all",
         axis_resources: Optional[Mapping[str, Any]] = None, mesh: Union[None, Mesh, Mapping[str, int]] = None,
         in_axes: Optional[Sequence[Any]] = None, out: Optional[Union[str, os.PathLike]] = None,
         kwargs: Optional[Mapping[str, Any]] = None, diff: bool = False) -> DumpResult:
    """Run namax's pipeline on ``fn(*args, **kwargs)`` and keep every stage's text.

    ``fn`` may be a plain function or a ``namedjit`` one (its ``axis_resources``, ``mesh``
    and ``in_axes`` apply unless given here). ``mesh`` is a Mesh or a dict of axis sizes.
    ``out`` writes one numbered file per stage and ``summary.txt`` into that folder.
    Failures raise :class:`~namax.tools.stages.StageError` naming the step that failed.

    >>> import jax.numpy as jnp
    >>> r = dump(lambda x: x * 2, jnp.ones(3), stages="jaxpr")
    >>> list(r.stages), r.summary.collectives
    (['jaxpr'], {})
    """
    keys = parse_stages(stages)
    program = Program(fn, args, kwargs, axis_resources=axis_resources, mesh=make_mesh(mesh), in_axes=in_axes)
    built = {k: BUILDERS[k](program) for k in keys}
    result = DumpResult(built, summarize(program), program)
    if out is not None:
        result.write(out, diff=diff)
    return result


__all__ = ["DumpResult", "Stage", "StageError", "dump", "make_mesh", "parse_stages", "render_stage"]
