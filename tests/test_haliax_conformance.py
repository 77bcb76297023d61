"""Every public name of Haliax exists in namax, or is listed in DEFERRED with a reason.

The names come from ``tests/data/haliax_public_names.txt`` (written from the live Haliax
by ``scripts/haliax_names.py``): ``nn.x`` is ``namax.nn.x``,
``NamedArray.x`` an attribute of ``namax.NamedArray``, ``partitioning.x`` is
``namax.partitioning.x``, and so on.
"""

import pathlib

import pytest

import namax

NAMES_FILE = pathlib.Path(__file__).parent / "data" / "haliax_public_names.txt"

DEFERRED = {
    "nn.ArrayStacked": "not planned: a stack of modules with plain (unnamed) array leaves, indexed by leading "
                       "position, that refuses NamedArray leaves; namax modules are named, use nn.Stacked",
    "quantization": "not yet: Haliax's fp8/int8 training quantization (AQT dot_general ops, "
                    "overwrite-with-gradient scale state); namax's quantization is the implicit-array "
                    "namax.quant (int4 weights, LoRA), a different API",
}


def haliax_names() -> list[str]:
    names = []
    for line in NAMES_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, kind = line.partition("\t")
            assert name and kind, f"malformed line in {NAMES_FILE.name}: {line!r}"
            names.append(name)
    return names


_MISSING = object()


def resolve(dotted: str):
    """``namax.<dotted>`` by attribute access (``NamedArray.x`` is a class attribute), or _MISSING."""
    obj = namax
    for part in dotted.split("."):
        obj = getattr(obj, part, _MISSING)
        if obj is _MISSING:
            return _MISSING
    return obj


def test_names_file_is_complete():
    names = haliax_names()
    assert len(names) > 400 and len(set(names)) == len(names)
    # every kind of name the test resolves is present
    for sample in ("Axis", "nn.Linear", "NamedArray.sum", "partitioning.named_jit", "axis.ds", "tree_util.tree_map"):
        assert sample in names


def test_every_haliax_name_exists_in_namax():
    missing = [n for n in haliax_names() if n not in DEFERRED and resolve(n) is _MISSING]
    assert not missing, f"{len(missing)} Haliax names missing from namax (add them or list them in DEFERRED): " \
                        + ", ".join(missing)


def test_deferred_names_are_really_missing():
    names = set(haliax_names())
    unknown = sorted(n for n in DEFERRED if n not in names)
    assert not unknown, f"DEFERRED lists names Haliax does not have: {unknown}"
    landed = sorted(n for n in DEFERRED if resolve(n) is not _MISSING)
    assert not landed, f"these DEFERRED names now exist in namax; remove them from DEFERRED: {landed}"


@pytest.mark.parametrize("dotted, expected", [
    ("named_jit", lambda: namax.namedjit),
    ("partitioning.named_jit", lambda: namax.namedjit),
    ("axis.ds", lambda: namax.ds),
    ("axis.dslice", lambda: namax.dslice),
    ("concat_axis_specs", lambda: namax.concat_axes),
    ("NamedArray.sum", lambda: namax.NamedArray.sum),
])
def test_resolve_finds_the_right_object(dotted, expected):
    assert resolve(dotted) is expected()


def test_resolve_reports_missing_names():
    assert resolve("no_such_name") is _MISSING
    assert resolve("nn.no_such_layer") is _MISSING
    assert resolve("NamedArray.no_such_method") is _MISSING
