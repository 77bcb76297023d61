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

_ISSUE_13 = "issue 13 (later)"
DEFERRED = {
    # state_dict: (de)serialisation of modules to flat dicts
    **{f"state_dict.{n}": f"{_ISSUE_13}: state dicts" for n in (
        "ModuleWithStateDictSerialization", "StateDict", "flatten_modules_for_export", "from_state_dict",
        "from_torch_compatible_state_dict", "load_state_dict", "save_state_dict", "to_numpy_state_dict",
        "to_state_dict", "to_torch_compatible_state_dict", "unflatten_modules_from_export", "with_prefix")},
    "nn.ArrayStacked": f"{_ISSUE_13}: nn layer",
    "nn.ConvTranspose": f"{_ISSUE_13}: nn layer",
    "nn.MoELinear": f"{_ISSUE_13}: nn layer",
    "nn.ragged_dot": f"{_ISSUE_13}: nn function",
    **{f"nn.attention.{n}": f"{_ISSUE_13}: attention helper" for n in (
        "alibi_attention_bias", "dot_product_attention_weights", "forgetful_causal_mask", "mask_to_bias",
        "prefix_lm_mask")},
    "nn.relu_squared": f"{_ISSUE_13}: activation",
    "nn.activations.relu_squared": f"{_ISSUE_13}: activation",
    "nn.cross_entropy_loss_and_log_normalizers": f"{_ISSUE_13}: loss",
    "nn.loss.cross_entropy_loss_and_log_normalizers": f"{_ISSUE_13}: loss",
    "nn.reduce_loss": f"{_ISSUE_13}: loss",
    "nn.loss.reduce_loss": f"{_ISSUE_13}: loss",
    "nn.loss.maybe_reduce_loss": f"{_ISSUE_13}: loss",
    **{f"nn.mup.{n}": f"{_ISSUE_13}: muP parametrisations" for n in (
        "AbstractEmbeddingReparam", "AbstractLinearReparam", "AbstractReparam", "EmbeddingMup",
        "EmbeddingStandardParam", "HiddenLinearMup", "InputLinearMup", "LinearStandardParam", "OutputLinearMup",
        "ReparamEnabled")},
    "shard_map": f"{_ISSUE_13}: shard_map",
    "partitioning.shard_map": f"{_ISSUE_13}: shard_map",
    "set_mesh": f"{_ISSUE_13}: set_mesh",
    "debug": f"{_ISSUE_13}: debug module",
    **{f"debug.{n}": f"{_ISSUE_13}: debug module" for n in (
        "ModuleProblems", "describe_array", "diagnose_common_issues", "visualize_named_sharding",
        "visualize_shardings")},
    "quantization": f"{_ISSUE_13}: quantization module",
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
