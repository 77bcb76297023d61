"""Write ``tests/data/haliax_public_names.txt``: the public names of the live Haliax, one per line.

Run it in a scratch virtualenv that has Haliax, not in namax's own::

    python3 -m venv /tmp/hax && /tmp/hax/bin/pip install marin-haliax
    /tmp/hax/bin/python scripts/haliax_names.py

Each line is ``<dotted name>\t<kind>``; ``NamedArray.<method>`` lines list the methods and
properties of Haliax's NamedArray. ``tests/test_haliax_conformance.py`` reads the file.
"""

import importlib
import importlib.metadata
import inspect
import pathlib
import typing

import haliax

# ``haliax.fft`` and ``haliax.poly`` are functions at the top level (they shadow their modules),
# so their modules' names are checked through the top level only.
MODULES = (
    "", "nn", "partitioning", "random", "axis", "haxtyping", "hof", "tree_util",
    "util", "debug", "state_dict", "nn.attention", "nn.activations", "nn.loss", "nn.mup",
)


def public(module):
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
        # a module without __all__: only what it defines, not what it imported
        names = [
            n for n in names
            if not inspect.ismodule(getattr(module, n))
            and not isinstance(getattr(module, n), typing.TypeVar)
            and getattr(getattr(module, n), "__module__", module.__name__) == module.__name__
        ]
    return sorted(set(names))


def kind(obj):
    return "module" if inspect.ismodule(obj) else type(obj).__name__


def main():
    version = importlib.metadata.version("marin-haliax")
    lines = [f"# marin-haliax {version}: public names (generated; see scripts/haliax_names.py)"]
    for dotted in MODULES:
        module = importlib.import_module("haliax" + ("." + dotted if dotted else ""))
        prefix = dotted + "." if dotted else ""
        for name in public(module):
            lines.append(f"{prefix}{name}\t{kind(getattr(module, name, None))}")
    for name in sorted(n for n in dir(haliax.NamedArray) if not n.startswith("_")):
        lines.append(f"NamedArray.{name}\tmethod")
    out = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "haliax_public_names.txt"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines) - 1} names to {out}")


if __name__ == "__main__":
    main()
