"""``dump-hlo``: print what namax did to a program, pass by pass, by name.

Usage::

    dump-hlo FILE_OR_MODULE:NAME [--stage STAGES] [--mesh data=4,model=2]
             [--axis-resources batch=data,head=model] [--devices 8] [--diff] [--out DIR]

The target ``NAME`` (looked up in a Python file or an importable module) is either

- a *factory*: a callable taking no arguments that returns ``(fn, args)`` or
  ``(fn, args, kwargs)``; ``fn`` may be a plain function or a ``namedjit`` one, the
  arguments may hold NamedArrays, plain arrays and implicit arrays (LoRA, int4, zeros); or
- the function itself (plain or ``namedjit``), with ``--args`` giving its positional
  inputs as axis shapes, e.g. ``--args x=batch:8,embed:256 w=embed:256,mlp:512``: each
  becomes a NamedArray of random normal values (``--dtype``), or with ``--raw`` a plain
  array whose names go to ``in_axes`` (for functions written in plain ``jax.numpy``).

Stages (``--stage``, comma-separated, or ``all``; ``summary`` prints only the summary):
jaxpr, implicit, names, sharding, stablehlo, hlo, costs. ``costs`` is the cost report by
axis name (:mod:`namax.tools.costs`): every collective of the compiled HLO with the axis
names it moves, its bytes per device, its mesh axes and the user's source line of the op
that caused it ("why is this all-gather here"), then memory per device by axis name (which
names dominate the largest buffers). A summary (names, implicit rewrites, collectives with
the names they move and their source lines, memory and memory by name, cost, largest
intermediates) ends every dump. A bad target, bad
option or failing stage -- or a target that raises ``SystemExit`` or is interrupted --
prints one line ``dump-hlo: ...`` on stderr and exits with status 2 (``--traceback`` shows
the full traceback too). ``--devices`` is at most 4096.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import sys
from typing import Any, Callable, Optional, Sequence

EXIT_ERROR = 2
MAX_DEVICES = 4096
"""The most CPU devices ``--devices`` simulates (each costs memory and threads)."""


class UsageError(Exception):
    """A problem with the target or the options: reported as one line.

    >>> parse_pairs("data=four", "--mesh", int)
    Traceback (most recent call last):
    ...
    namax.tools.dump_hlo.UsageError: --mesh 'data=four': 'four' for 'data' is not a valid size
    """


def build_parser() -> argparse.ArgumentParser:
    """The ``dump-hlo`` argument parser.

    >>> ns = build_parser().parse_args(["model.py:make", "--mesh", "data=2", "--diff"])
    >>> ns.target, ns.mesh, ns.stage, ns.diff, ns.devices
    ('model.py:make', 'data=2', 'all', True, None)
    """
    doc = __doc__.split("The target", 1)[1]
    parser = argparse.ArgumentParser(
        prog="dump-hlo", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Show what namax does to a program: traced jaxpr, implicit-array rewrite, names, "
                    "sharding, annotated StableHLO, optimized HLO, the cost report by axis name, and a summary.",
        epilog="The target" + doc + "\nexample:\n  dump-hlo examples/dump_targets.py:make_mlp --devices 8 "
               "--mesh data=4,model=2 --axis-resources batch=data,mlp=model --stage all --diff --out dumps/")
    parser.add_argument("target", help="FILE.py:NAME or package.module:NAME (see below)")
    parser.add_argument("--stage", default="all",
                        help="jaxpr, implicit, names, sharding, stablehlo, hlo, costs, all or summary; "
                             "comma-separated for several (default: all)")
    parser.add_argument("--mesh", help="mesh axis sizes, e.g. data=4,model=2")
    parser.add_argument("--axis-resources", help="axis name to mesh axis, e.g. batch=data,head=model "
                                                 "(several mesh axes: embed=data+model)")
    parser.add_argument("--devices", type=int, help="simulate N CPU devices (sets XLA_FLAGS before jax starts)")
    parser.add_argument("--args", nargs="+", metavar="[NAME=]AXIS:SIZE,...",
                        help="the target is the function; build its positional inputs from these shapes")
    parser.add_argument("--raw", action="store_true",
                        help="with --args: pass plain arrays and give their names through in_axes")
    parser.add_argument("--dtype", default="float32", help="dtype of the --args inputs (default: float32)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the --args inputs (default: 0)")
    parser.add_argument("--diff", action="store_true", help="add a unified diff of each pass's change")
    parser.add_argument("--out", help="write one numbered file per stage (and summary.txt) into this folder")
    parser.add_argument("--plan", action="store_true",
                        help="search the axis mapping on --mesh first (namax.plan), print its table, then dump "
                             "the program under the planned mapping")
    parser.add_argument("--memory-budget-mb", type=float,
                        help="with --plan: memory per device in MiB that the mapping must fit")
    parser.add_argument("--plan-parameters", type=int, metavar="N",
                        help="with --plan: the position of the parameters argument; adds FSDP-style candidates "
                             "(parameters split apart from the computation), dumped with the planned placement")
    parser.add_argument("--traceback", action="store_true", help="print the full traceback on errors")
    return parser


def parse_pairs(text: Optional[str], option: str, value_type=str) -> dict:
    """``"data=4,model=2"`` -> ``{"data": 4, "model": 2}``; a clear UsageError otherwise.

    A name given twice is an error (never "the last one wins").

    >>> parse_pairs("data=4, model=2", "--mesh", int), parse_pairs(None, "--mesh")
    ({'data': 4, 'model': 2}, {})
    >>> parse_pairs("data=2,data=4", "--mesh", int)
    Traceback (most recent call last):
    ...
    namax.tools.dump_hlo.UsageError: --mesh 'data=2,data=4': 'data' is given twice
    """
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UsageError(f"{option} {text!r}: expected NAME=VALUE pairs separated by commas, got {item!r}")
        if key.strip() in out:
            raise UsageError(f"{option} {text!r}: {key.strip()!r} is given twice")
        try:
            out[key.strip()] = value_type(value.strip())
        except ValueError:
            raise UsageError(f"{option} {text!r}: {value.strip()!r} for {key.strip()!r} is not a valid size") from None
    return out


def parse_resources(text: Optional[str]) -> Optional[dict]:
    """``--axis-resources`` as an axis mapping; ``+`` joins several mesh axes; None if empty.

    >>> parse_resources("batch=data,embed=data+model"), parse_resources("")
    ({'batch': 'data', 'embed': ('data', 'model')}, None)
    """
    pairs = parse_pairs(text, "--axis-resources")
    if not pairs:
        return None
    return {k: tuple(v.split("+")) if "+" in v else v for k, v in pairs.items()}


def parse_arg_shapes(specs: Sequence[str]) -> list[tuple[str, tuple[tuple[str, int], ...]]]:
    """``["x=batch:8,embed:256"]`` -> ``[("x", (("batch", 8), ("embed", 256)))]``.

    Unlabelled specs are called ``arg0``, ``arg1``, ...

    >>> parse_arg_shapes(["x=batch:8,embed:256", "embed:256"])
    [('x', (('batch', 8), ('embed', 256))), ('arg1', (('embed', 256),))]
    """
    out = []
    for i, spec in enumerate(specs):
        label, _, dims = spec.rpartition("=")
        axes = []
        for dim in filter(None, dims.split(",")):
            m = re.fullmatch(r"\s*([A-Za-z_][\w.]*)\s*:\s*(\d+)\s*", dim)
            if m is None:
                raise UsageError(f"--args {spec!r}: each dimension is AXIS:SIZE, got {dim!r}")
            axes.append((m.group(1), int(m.group(2))))
        names = [a for a, _ in axes]
        if len(set(names)) != len(names):
            raise UsageError(f"--args {spec!r}: an axis name appears twice")
        out.append((label or f"arg{i}", tuple(axes)))
    return out


def load_target(target: str) -> Any:
    """The object named by ``FILE.py:NAME`` or ``module:NAME`` (NAME may be dotted).

    >>> load_target("namax.tools.dump_hlo:UsageError.__name__")
    'UsageError'
    >>> load_target("namax.tools.dump_hlo:nope")
    Traceback (most recent call last):
    ...
    namax.tools.dump_hlo.UsageError: cannot find 'nope' in 'namax.tools.dump_hlo': it has no attribute 'nope'
    """
    where, sep, name = target.rpartition(":")
    if not sep or not where or not name:
        raise UsageError(f"target {target!r}: expected FILE_OR_MODULE:NAME, e.g. examples/model.py:make")
    try:
        if where.endswith(".py") or os.sep in where:
            if not os.path.exists(where):
                raise UsageError(f"cannot import {where!r}: no such file")
            module_name = "_dump_target_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(where))[0])
            spec = importlib.util.spec_from_file_location(module_name, where)
            module = importlib.util.module_from_spec(spec)
            sys.path.insert(0, os.path.dirname(os.path.abspath(where)))
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except UsageError:
        raise
    except BaseException as e:  # noqa: BLE001 -- SyntaxError, SystemExit in a script, ...
        raise UsageError(f"cannot import {where!r}: {type(e).__name__}: {_one_line(e)}") from e
    obj = module
    for part in name.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"cannot find {name!r} in {where!r}: it has no attribute {part!r}")
        obj = getattr(obj, part)
    return obj


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def build_call(target: str, obj: Any, ns: argparse.Namespace):
    """``(fn, args, kwargs, in_axes)`` from a factory target or a function plus ``--args``.

    >>> import jax.numpy as jnp
    >>> ns = build_parser().parse_args(["jax.numpy:sin", "--args", "x=batch:2,embed:3"])
    >>> fn, args, kwargs, in_axes = build_call(ns.target, jnp.sin, ns)
    >>> args[0].axes, kwargs, in_axes
    ((Axis('batch', 2), Axis('embed', 3)), {}, None)
    >>> ns = build_parser().parse_args(["jax.numpy:sin", "--args", "x=batch:2,embed:3", "--raw"])
    >>> build_call(ns.target, jnp.sin, ns)[3]  # plain arrays, names through in_axes
    (('batch', 'embed'),)
    """
    import jax
    import numpy as np

    import namax as nx

    if not callable(obj):
        raise UsageError(f"target {target} is a {type(obj).__name__}, not a callable")
    if ns.args:
        shapes = parse_arg_shapes(ns.args)
        try:
            dtype = np.dtype(jax.numpy.dtype(ns.dtype))
        except TypeError:
            raise UsageError(f"--dtype {ns.dtype!r} is not a dtype") from None
        key = jax.random.key(ns.seed)
        raw = ns.raw or (isinstance(obj, nx.NamedJit) and obj.in_axes is not None)
        args = []
        for i, (_, axes) in enumerate(shapes):
            value = jax.random.normal(jax.random.fold_in(key, i), tuple(s for _, s in axes), dtype)
            args.append(value if raw else nx.named(value, tuple(nx.Axis(n, s) for n, s in axes)))
        in_axes = tuple(tuple(n for n, _ in axes) for _, axes in shapes) if raw else None
        if isinstance(obj, nx.NamedJit) and obj.in_axes is not None and not ns.raw:
            in_axes = None  # its own in_axes apply
        return obj, tuple(args), {}, in_axes
    if isinstance(obj, nx.NamedJit):
        raise UsageError(f"target {target} is a namedjit function: give its inputs with --args "
                         "(e.g. --args x=batch:8,embed:256), or name a factory returning (fn, args)")
    try:
        made = obj()
    except TypeError as e:
        raise UsageError(f"target {target} could not be called without arguments ({_one_line(e)}); a function to dump "
                         "needs --args, a factory must return (fn, args) or (fn, args, kwargs)") from e
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"target {target} raised while building (fn, args): {type(e).__name__}: {_one_line(e)}") from e
    if not isinstance(made, (tuple, list)) or len(made) not in (2, 3) or not callable(made[0]) \
            or not isinstance(made[1], (tuple, list)) or (len(made) == 3 and not isinstance(made[2], dict)):
        got = type(made).__name__ if not isinstance(made, (tuple, list)) else \
            f"a {len(made)}-tuple of ({', '.join(type(m).__name__ for m in made)})"
        raise UsageError(f"target {target} returned {got}, not (fn, args) or (fn, args, kwargs) "
                         "with a callable fn, a tuple of args and a dict of kwargs")
    fn, args, kwargs = made[0], tuple(made[1]), dict(made[2]) if len(made) == 3 else {}
    return fn, args, kwargs, None


def set_device_count(n: int) -> None:
    """Ask XLA for ``n`` host devices; must run before jax creates its CPU backend.

    >>> set_device_count(0)
    Traceback (most recent call last):
    ...
    namax.tools.dump_hlo.UsageError: --devices 0: need at least 1 device
    >>> set_device_count(100000)
    Traceback (most recent call last):
    ...
    namax.tools.dump_hlo.UsageError: --devices 100000: at most 4096 simulated CPU devices (each one costs memory)
    """
    if n < 1:
        raise UsageError(f"--devices {n}: need at least 1 device")
    if n > MAX_DEVICES:
        raise UsageError(f"--devices {n}: at most {MAX_DEVICES} simulated CPU devices (each one costs memory)")
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
    # a backend started earlier in this process keeps its device count: run() checks the count


def run(ns: argparse.Namespace) -> int:
    """Dump the target of parsed options ``ns`` to stdout (or ``--out``); raises UsageError.

    >>> run(build_parser().parse_args(["jax.numpy:sin", "--axis-resources", "batch=data"]))
    Traceback (most recent call last):
    ...
    namax.tools.dump_hlo.UsageError: --axis-resources needs --mesh (e.g. --mesh data=4,model=2)
    """
    if ns.devices is not None:
        set_device_count(ns.devices)
    import jax

    from namax.dump import dump, parse_stages

    try:
        stages = parse_stages(ns.stage)
    except ValueError as e:
        raise UsageError(f"--stage {ns.stage!r}: {e}") from None
    if ns.devices is not None and len(jax.devices()) != ns.devices and jax.default_backend() == "cpu":
        raise UsageError(f"--devices {ns.devices}: jax started with {len(jax.devices())} devices")
    mesh = parse_pairs(ns.mesh, "--mesh", int) or None
    for name, size in (mesh or {}).items():
        if size < 1:
            raise UsageError(f"--mesh {ns.mesh!r}: mesh axis {name!r} has size {size}; sizes are at least 1")
    resources = parse_resources(ns.axis_resources)
    if resources and not mesh:
        raise UsageError("--axis-resources needs --mesh (e.g. --mesh data=4,model=2)")
    if ns.plan and not mesh:
        raise UsageError("--plan needs --mesh (e.g. --mesh data=4,model=2)")
    if ns.plan and resources:
        raise UsageError("--plan chooses the mapping: give --plan or --axis-resources, not both")
    for option, value in (("--memory-budget-mb", ns.memory_budget_mb), ("--plan-parameters", ns.plan_parameters)):
        if value is not None and not ns.plan:
            raise UsageError(f"{option} applies to --plan")
    if ns.memory_budget_mb is not None and not ns.memory_budget_mb > 0:
        raise UsageError(f"--memory-budget-mb {ns.memory_budget_mb}: must be positive")
    obj = load_target(ns.target)
    fn, args, kwargs, in_axes = build_call(ns.target, obj, ns)
    if ns.plan:
        fn, resources = plan_mapping(fn, args, kwargs, in_axes, mesh, ns)
    try:
        result = dump(fn, *args, kwargs=kwargs, stages=stages, axis_resources=resources, mesh=mesh, in_axes=in_axes)
    except ValueError as e:
        raise UsageError(f"{ns.target}: {_one_line(e)}") from e
    if ns.out:
        for path in result.write(ns.out, diff=ns.diff):
            print(f"wrote {path}")
        print("\n==== summary ====\n" + str(result.summary))
    else:
        sys.stdout.write(result.render(diff=ns.diff))
    return 0


def plan_mapping(fn: Callable, args: Sequence[Any], kwargs: dict, in_axes: Any, mesh: dict,
                 ns: argparse.Namespace) -> tuple[Callable, Optional[dict]]:
    """``--plan``: print :func:`namax.plan`'s table for the target on ``mesh``; return what to
    dump: ``(fn, mapping)``, or for an FSDP-style pick (``--plan-parameters``) ``fn`` under
    namedjit with the planned parameter placement and no separate mapping."""
    from namax.dump import make_mesh
    from namax.plan import plan

    if kwargs:
        raise UsageError(f"--plan: the target passes keyword arguments {sorted(kwargs)}; plan takes positional ones")
    parameters = ns.plan_parameters
    if parameters is not None and not 0 <= parameters < len(args):
        raise UsageError(f"--plan-parameters {parameters}: the target has {len(args)} positional arguments")
    budget = None if ns.memory_budget_mb is None else int(ns.memory_budget_mb * 2**20)
    on = make_mesh(mesh)
    planned = plan(fn, *args, mesh=on, in_axes=in_axes, memory_budget=budget, parameters=parameters)
    print(f"==== plan ({planned.seconds:.1f} s) ====\n{planned}\nplanned mapping: {planned.mapping}")
    if planned.parameter_mapping is None:
        print()
        return fn, dict(planned.mapping)
    print(f"planned parameter mapping (argument {parameters} and the outputs): {planned.parameter_mapping}\n")
    return planned.namedjit(fn, mesh=on, in_axes=in_axes), None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The console script: parse options, set XLA_FLAGS, then import jax and dump.

    Every failure -- including a target that raises ``SystemExit`` (even ``SystemExit(0)``)
    or ``KeyboardInterrupt`` -- prints one line on stderr and returns 2; only ``--help``
    and argparse's own usage errors exit through ``SystemExit``.

    >>> import contextlib, sys
    >>> with contextlib.redirect_stderr(sys.stdout):
    ...     main(["no_such_file.py:make"])
    dump-hlo: cannot import 'no_such_file.py': no such file
    2
    """
    ns = build_parser().parse_args(argv)
    try:
        return run(ns)
    except (SystemExit, KeyboardInterrupt) as e:  # from the target: never a silent exit 0
        if ns.traceback:
            import traceback

            traceback.print_exc()
        what = f"SystemExit({e.code!r})" if isinstance(e, SystemExit) else "KeyboardInterrupt"
        print(f"dump-hlo: {ns.target}: stopped by {what} before the dump was complete", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # noqa: BLE001 -- every failure becomes one line and status 2
        from namax.tools.stages import StageError

        if ns.traceback:
            import traceback

            traceback.print_exc()
        if isinstance(e, StageError):
            print(f"dump-hlo: {ns.target}: {e}", file=sys.stderr)
        elif isinstance(e, UsageError):
            print(f"dump-hlo: {e}", file=sys.stderr)
        else:
            print(f"dump-hlo: {ns.target}: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
