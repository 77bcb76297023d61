"""namax uses public JAX only: no ``jax._src``, no private attribute of a JAX module or object.

The check parses every ``.py`` file under ``namax/`` (so comments and docstrings do not
count) and follows the names that imports bind (``import jax.numpy as jnp``, ``from
jax.extend import core as jcore``) to find attribute chains rooted at JAX.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "namax")

JAX_ROOTS = {"jax", "jaxlib"}
# private attributes of JAX objects (lowered/compiled stages, backends), whatever object holds them
PRIVATE_OBJECT_ATTRS = {"_lowering", "_hlo", "_executable", "_xla_executable", "_xla_computation", "_src"}
# jax.interpreters modules that are JAX internals rather than API
INTERNAL_MODULES = {"jax.interpreters.pxla", "jax.interpreters.xla"}
IMPORT_FUNCTIONS = {"import_module", "__import__"}
ATTR_FUNCTIONS = {"getattr", "hasattr", "setattr", "delattr"}


def _private(segment: str) -> bool:
    return segment.startswith("_") and not (segment.startswith("__") and segment.endswith("__"))


def _bad_module(dotted: str) -> bool:
    parts = dotted.split(".")
    if parts[0] not in JAX_ROOTS:
        return False
    return any(_private(p) for p in parts[1:]) or any(dotted == m or dotted.startswith(m + ".")
                                                      for m in INTERNAL_MODULES)


def _jax_aliases(tree: ast.AST) -> dict[str, str]:
    """Local names bound to JAX modules or objects by any import in the file -> their dotted path."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in JAX_ROOTS:
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in JAX_ROOTS:
                for a in node.names:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


def _chain(node: ast.AST) -> tuple[str, list[str]] | None:
    """``a.b.c`` -> ("a", ["b", "c"]); None when the chain is not rooted at a plain name."""
    attrs = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    return (node.id, attrs[::-1]) if isinstance(node, ast.Name) else None


def private_jax_uses(source: str, filename: str = "<source>") -> list[str]:
    """Each use of private JAX in ``source`` as ``file:line: what``."""
    tree = ast.parse(source, filename)
    aliases = _jax_aliases(tree)
    found = []

    def report(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{node.lineno}: {what}")

    def jax_path(expr: ast.AST) -> str | None:
        chain = _chain(expr)
        if chain is None or chain[0] not in aliases:
            return None
        return ".".join([aliases[chain[0]], *chain[1]])

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if _bad_module(a.name):
                    report(node, f"import {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for a in node.names:
                if _bad_module(node.module) or (node.module.split(".")[0] in JAX_ROOTS and _private(a.name)) \
                        or _bad_module(f"{node.module}.{a.name}"):
                    report(node, f"from {node.module} import {a.name}")
        elif isinstance(node, ast.Attribute):
            path = jax_path(node)
            if path is not None and (_private(node.attr) or path in INTERNAL_MODULES):
                report(node, f"private JAX attribute {path}")
            elif node.attr in PRIVATE_OBJECT_ATTRS:
                report(node, f"private JAX attribute .{node.attr}")
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else None
            const = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            if name in IMPORT_FUNCTIONS and const and _bad_module(const[0]):
                report(node, f"{name}({const[0]!r})")
            if name in ATTR_FUNCTIONS and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
                    and isinstance(node.args[1].value, str):
                attr = node.args[1].value
                if attr in PRIVATE_OBJECT_ATTRS or (_private(attr) and jax_path(node.args[0]) is not None):
                    report(node, f"{name}(..., {attr!r})")
    return found


def _package_files():
    for folder, _, files in os.walk(PACKAGE):
        for f in sorted(files):
            if f.endswith(".py"):
                yield os.path.join(folder, f)


def test_namax_uses_public_jax_only():
    files = list(_package_files())
    assert len(files) > 20, f"expected the namax package under {PACKAGE}"
    problems = []
    for path in files:
        with open(path, encoding="utf-8") as fh:
            problems += private_jax_uses(fh.read(), os.path.relpath(path, ROOT))
    assert not problems, "private JAX used:\n" + "\n".join(problems)


@pytest.mark.parametrize("source, what", [
    ("import jax._src.core", "import jax._src.core"),
    ("from jax._src import core", "from jax._src import core"),
    ("from jax._src.interpreters.mlir import lower_fun", "from jax._src.interpreters.mlir import lower_fun"),
    ("from jax import _src", "from jax import _src"),
    ("import jax\nx = jax._src.core.Tracer", "private JAX attribute jax._src"),
    ("import jax.numpy as jnp\njnp._something(1)", "private JAX attribute jax.numpy._something"),
    ("from jax.extend import core as jcore\njcore._private", "private JAX attribute jax.extend.core._private"),
    ("from jax.lib import xla_bridge\nxla_bridge._backends", "private JAX attribute jax.lib.xla_bridge._backends"),
    ("import jax\njax.interpreters.pxla.thing", "private JAX attribute jax.interpreters.pxla"),
    ("from jax.interpreters import pxla", "from jax.interpreters import pxla"),
    ("def f(lowered):\n    return lowered._lowering", "private JAX attribute ._lowering"),
    ("def f(c):\n    return c._executable.xla_extension_executable()", "private JAX attribute ._executable"),
    ("def f(lowered):\n    return lowered.compiler_ir()._hlo", "private JAX attribute ._hlo"),
    ("def f(c):\n    return getattr(c, '_executable')", "getattr(..., '_executable')"),
    ("import jax\ngetattr(jax.config, '_read')", "getattr(..., '_read')"),
    ("import importlib\nimportlib.import_module('jax._src.core')", "import_module('jax._src.core')"),
])
def test_checker_finds_private_uses(source, what):
    found = private_jax_uses(source)
    assert found and any(what in f for f in found), found


@pytest.mark.parametrize("source", [
    "import jax\nx = jax.numpy.zeros(3).__class__.__name__",
    "from jax.extend import core as jcore\njcore.Primitive('p')",
    "import jax\nisinstance(1, jax.core.Tracer)",
    "# import jax._src.core in a comment\n'''from jax._src import core in a docstring'''",
    "class A:\n    def f(self):\n        return self._private",
    "import numpy as np\nnp._NoValue",
    "from . import _int4_dot",
])
def test_checker_accepts_public_uses(source):
    assert private_jax_uses(source) == []
