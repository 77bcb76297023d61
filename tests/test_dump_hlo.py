"""dump-hlo: the console script on the example targets, the namax.dump API, error lines and exit status."""

import ast
import os
import re
import subprocess
import sys
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec

import namax as nx
from namax.dump import dump
from namax.tools import dump_hlo
from namax.tools.summary import COLLECTIVE, collectives

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = os.path.join(ROOT, "examples", "dump_targets.py")
sys.path.insert(0, os.path.join(ROOT, "examples"))
import dump_targets  # noqa: E402

SHARDED = ["--devices", "8", "--mesh", "data=4,model=2", "--axis-resources", "batch=data,mlp=model"]


def _cli(*argv, check=True):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-m", "namax.tools.dump_hlo", *argv], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _summary_value(text, label):
    m = re.search(rf"{label} (\d+) B", text)
    assert m, f"no {label!r} in summary:\n{text}"
    return int(m.group(1))


def _mesh():
    return jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2, devices=jax.devices()[:8])


@pytest.fixture(scope="module")
def sharded_dump(tmp_path_factory):
    out = tmp_path_factory.mktemp("dumps")
    proc = _cli(f"{TARGETS}:make_mlp", *SHARDED, "--stage", "all", "--diff", "--out", str(out))
    return out, proc.stdout


def test_out_writes_one_numbered_file_per_stage(sharded_dump):
    out, stdout = sharded_dump
    files = sorted(os.listdir(out))
    stages = ["01-jaxpr", "02-implicit", "03-names", "04-sharding", "05-stablehlo", "06-hlo", "07-costs"]
    assert [f for f in files if f.endswith(".txt")] == [s + ".txt" for s in stages] + ["summary.txt"]
    assert "04-sharding.diff" in files and "05-stablehlo.diff" in files
    assert "wrote " in stdout and "==== summary ====" in stdout


def test_stage_contents_carry_names(sharded_dump):
    out, _ = sharded_dump
    read = lambda name: open(os.path.join(out, name)).read()  # noqa: E731
    assert "named_axes[axes=('batch', 'mlp')]" in read("01-jaxpr.txt")
    assert "no implicit arrays" in read("02-implicit.txt")
    names = read("03-names.txt")
    assert "a:f32[batch:8,embed:16] b:f32[embed:16,mlp:32] c:f32[mlp:32,embed:16]" in names
    assert "tanh" in names and re.search(r"= tanh", names) and "f32[batch:8,mlp:32] = tanh" in names
    sharding = read("04-sharding.txt")
    expected = str(PartitionSpec("data", "model"))
    assert re.search(rf"#\d+ dot_general\s+f32\[batch:8,mlp:32\]\s+{re.escape(expected)}", sharding)
    assert "sharding_constraint[P('data', 'model')]" in sharding
    assert 'named_axes = "batch,mlp"' in read("05-stablehlo.txt")
    assert "HloModule" in read("06-hlo.txt")


def test_diffs_show_what_each_pass_changed(sharded_dump):
    out, _ = sharded_dump
    sharding_diff = open(os.path.join(out, "04-sharding.diff")).read()
    added = [line for line in sharding_diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert added and all("sharding_constraint" in line for line in added)
    # one constraint per input, per named tag (2 x batch,mlp + 1 x batch,embed) and per output
    jaxpr = open(os.path.join(out, "01-jaxpr.txt")).read()
    assert len(added) == 3 + jaxpr.count("named_axes[") + 1
    stablehlo_diff = open(os.path.join(out, "05-stablehlo.diff")).read()
    assert any(line.startswith("+") and "named_axes" in line for line in stablehlo_diff.splitlines())


def test_summary_collectives_match_compiled_hlo(sharded_dump):
    out, stdout = sharded_dump
    hlo = open(os.path.join(out, "06-hlo.txt")).read()
    counts = Counter(m.group(1) for line in hlo.splitlines() if (m := COLLECTIVE.search(line)))
    summary = open(os.path.join(out, "summary.txt")).read()
    assert counts, "the sharded MLP should need at least one collective"
    for kind, n in counts.items():
        assert re.search(rf"{kind} x{n} \d+ B", summary), summary
    assert f"collectives: {sum(counts.values())} (" in summary


def test_summary_memory_matches_memory_analysis(sharded_dump):
    _, stdout = sharded_dump
    fn, args = dump_targets.make_mlp()
    compiled = nx.namedjit(fn, axis_resources={"batch": "data", "mlp": "model"}, mesh=_mesh()).lower(*args).compile()
    mem = compiled.memory_analysis()
    assert _summary_value(stdout, "argument") == mem.argument_size_in_bytes
    assert _summary_value(stdout, "output") == mem.output_size_in_bytes
    assert _summary_value(stdout, "temp") == mem.temp_size_in_bytes
    cost = compiled.cost_analysis()
    flops = float(re.search(r"cost: (\d+) FLOPs", stdout).group(1))
    assert flops == pytest.approx(cost["flops"])


def test_lora_target_implicit_stage():
    proc = _cli(f"{TARGETS}:make_lora", "--stage", "implicit,names", "--diff")
    text = proc.stdout
    # both dot_generals of the traced program had a LoRA weight operand and were rewritten
    fn, args = dump_targets.make_lora()
    traced = dump(fn, *args, stages="jaxpr").program.traced
    n_dots = sum(e.primitive.name == "dot_general" for e in traced.jaxpr.eqns)
    assert f"implicit arrays: {n_dots} use(s) rewritten (dot_general x{n_dots}), 0 materialized" in text
    assert "---- diff 01-jaxpr -> 02-implicit ----" in text
    diff = text.split("---- diff 01-jaxpr -> 02-implicit ----")[1].split("====")[0]
    assert sum(line.startswith("+") and "dot_general" in line for line in diff.splitlines()) == 2 * n_dots
    assert "f32[batch:8,mlp:32] = tanh" in text  # names reach through the rewritten LoRA dots
    assert "Traceback" not in proc.stderr


def test_plain_function_with_raw_args():
    proc = _cli(f"{TARGETS}:plain_mlp", "--raw", "--args", "x=batch:8,embed:16", "w1=embed:16,mlp:32",
                "w2=mlp:32,embed:16", "--stage", "names")
    assert "a:f32[batch:8,embed:16] b:f32[embed:16,mlp:32] c:f32[mlp:32,embed:16]" in proc.stdout
    assert re.search(r"f32\[batch:8,embed:16\] = dot_general", proc.stdout)
    assert "without names" in proc.stdout and ", 0 without names" in proc.stdout


def test_import_failure_is_one_line_with_status_2():
    proc = _cli("examples/no_such_file.py:make", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "dump-hlo: cannot import 'examples/no_such_file.py': no such file"


# --- in-process: the API and the remaining error paths ------------------------------------


def test_api_zeros_rewritten_and_materialized():
    import namax.quant as quant

    fn, args = dump_targets.make_zeros_bias()
    r = dump(fn, *args, stages="implicit")
    stats = r.summary.implicit
    assert stats.materialized == Counter({("exp", "Zeros"): 1})
    assert stats.rewritten["add"] == 1
    assert "1 materialized (exp of Zeros x1)" in r.stages["implicit"].notes[0]
    with pytest.warns(UserWarning, match="exp was not handled"):
        got = quant.use_implicit_args(fn)(*args)
    np.testing.assert_allclose(got, np.asarray(args[0]) @ np.asarray(args[1]), rtol=1e-5, atol=1e-5)


def test_api_int4_weights_rewritten_with_names():
    fn, args = dump_targets.make_int4()
    r = dump(fn, *args, stages="implicit,names")
    stats = r.summary.implicit
    assert stats.rewritten["dot_general"] == 2 and not stats.materialized
    # the dequantising dots run inside a scan on the CPU, or in the int4 CPU kernel's custom
    # call; names reach through them (the scales carry the output axis: Int4Weight.child_names)
    assert "scan" in r.stages["implicit"].text or "namax_int4_matmul" in r.stages["implicit"].text
    assert "f32[batch:8,mlp:32] = tanh" in r.stages["names"].text
    dense = {k: v.materialize() for k, v in args[0].items()}
    out = fn(*args)
    assert out.axis_names == ("batch", "embed")
    np.testing.assert_allclose(out.array, dump_targets.lora_mlp(dense, args[1]), rtol=1e-4, atol=1e-4)


def test_api_largest_intermediates_and_counts():
    x, w = jnp.ones((8, 4)), jnp.ones((4, 64))
    r = dump(lambda x, w: jnp.sum(jnp.tanh(x @ w), axis=1), x, w, in_axes=(("batch", "embed"), ("embed", "mlp")),
             stages="names")
    big = r.summary.largest[0]
    assert big.type == "f32[batch:8,mlp:64]" and big.nbytes == np.zeros((8, 64), np.float32).nbytes
    assert r.summary.values == 3 and r.summary.fully_named == 3
    assert r.summary.collectives == {}


def test_collectives_parser_bytes():
    text = ("  %all-gather = f32[512,512]{1,0} all-gather(%param.1), dimensions={0}\n"
            "  %x = f32[8]{0} add(%all-gather.1, %y)\n"
            "  %ar = (bf16[4,4]{1,0}, f32[2]{0}) all-reduce(%a, %b), to_apply=%sum\n")
    expected_ar = np.zeros((4, 4), jnp.bfloat16).nbytes + np.zeros(2, np.float32).nbytes
    assert collectives(text) == {"all-gather": (1, np.zeros((512, 512), np.float32).nbytes),
                                 "all-reduce": (1, expected_ar)}


@pytest.mark.parametrize("argv, message", [
    (["examples/dump_targets.py:missing"], "dump-hlo: cannot find 'missing' in 'examples/dump_targets.py'"),
    (["examples/dump_targets.py:make_not_a_pair"],
     "dump-hlo: target examples/dump_targets.py:make_not_a_pair returned int, not (fn, args)"),
    (["examples/dump_targets.py:make_bad_trace"],
     "dump-hlo: examples/dump_targets.py:make_bad_trace: tracing the function failed: TypeError: dot_general"),
    (["examples/dump_targets.py:named_mlp"], "could not be called without arguments"),
    (["examples/dump_targets.py:make_mlp", "--stage", "bogus"], "--stage 'bogus': unknown stage 'bogus'"),
    (["examples/dump_targets.py:make_mlp", "--mesh", "data=4,model=4"], "needs 16 devices"),
    (["examples/dump_targets.py:named_mlp", "--args", "x=batch8"], "each dimension is AXIS:SIZE, got 'batch8'"),
    (["nope"], "expected FILE_OR_MODULE:NAME"),
])
def test_errors_are_one_line_with_status_2(argv, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert dump_hlo.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_traceback_flag_shows_the_traceback(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert dump_hlo.main(["examples/dump_targets.py:make_bad_trace", "--traceback"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("dump-hlo: ")


def test_help_documents_the_target_protocol(capsys):
    with pytest.raises(SystemExit) as e:
        dump_hlo.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "(fn, args)" in out and "--args" in out and "--devices" in out


# --- failures are never silent (issue 15) ----------------------------------------------------

EXITING_TARGETS = '''
import sys
import jax.numpy as jnp


def make_exit_0():
    raise SystemExit(0)


def make_exit_none():
    sys.exit()


def make_fn_exits():
    def fn(x):
        sys.exit(0)
    return fn, (jnp.ones(2),)


def make_interrupted():
    raise KeyboardInterrupt
'''


@pytest.fixture
def exiting_targets(tmp_path):
    path = tmp_path / "exiting_targets.py"
    path.write_text(EXITING_TARGETS)
    return str(path)


@pytest.mark.parametrize("name, what", [
    ("make_exit_0", "SystemExit(0)"),
    ("make_exit_none", "SystemExit(None)"),
    ("make_fn_exits", "SystemExit(0)"),
    ("make_interrupted", "KeyboardInterrupt"),
])
def test_target_exiting_is_a_failure(exiting_targets, name, what, capsys):
    assert dump_hlo.main([f"{exiting_targets}:{name}"]) == 2
    out, err = capsys.readouterr()
    assert err.strip() == f"dump-hlo: {exiting_targets}:{name}: stopped by {what} before the dump was complete"
    assert out == ""


def test_target_exiting_0_exits_2_from_the_console(exiting_targets):
    proc = _cli(f"{exiting_targets}:make_exit_0", check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"dump-hlo: {exiting_targets}:make_exit_0: stopped by SystemExit(0) before the dump was complete"]


@pytest.mark.parametrize("argv, message", [
    (["--mesh", "data=2,data=4"], "dump-hlo: --mesh 'data=2,data=4': 'data' is given twice"),
    (["--mesh", "data=2", "--axis-resources", "batch=data,batch=model"],
     "dump-hlo: --axis-resources 'batch=data,batch=model': 'batch' is given twice"),
    (["--mesh", "data=0"], "dump-hlo: --mesh 'data=0': mesh axis 'data' has size 0; sizes are at least 1"),
    (["--devices", "100000"], f"dump-hlo: --devices 100000: at most {dump_hlo.MAX_DEVICES} simulated CPU devices"),
])
def test_bad_mesh_and_devices_are_errors(argv, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    flags = os.environ.get("XLA_FLAGS")
    assert dump_hlo.main(["examples/dump_targets.py:make_mlp", *argv]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [err.strip()] and err.startswith(message)
    assert os.environ.get("XLA_FLAGS") == flags  # refused before touching XLA_FLAGS
    assert dump_hlo.MAX_DEVICES <= 4096


def test_plan_flag_prints_the_plan_and_dumps_under_its_mapping(capsys, monkeypatch):
    """``--plan``: namax.plan's table first, then the dump under the planned mapping (its
    collectives are the planned candidate's)."""
    monkeypatch.chdir(ROOT)
    assert dump_hlo.main(["examples/dump_targets.py:make_mlp", "--mesh", "data=4,model=2", "--plan",
                          "--stage", "summary"]) == 0
    out = capsys.readouterr().out
    table = out.split("==== summary ====")[0]
    assert "| rank | mapping | predicted cost |" in table
    planned = re.search(r"planned mapping: (\{.*\})", out).group(1)
    first_row = re.search(r"^\| 1 \| ([^|]+) \|", table, re.M).group(1).strip()
    from namax.plan import mapping_text

    assert mapping_text(ast.literal_eval(planned)) == first_row  # rank 1 is the mapping
    assert "collectives:" in out.split("==== summary ====")[1]


def test_plan_parameters_flag_adds_fsdp_candidates_and_dumps_the_pick(capsys, monkeypatch):
    """``--plan-parameters 0``: the table has FSDP-style twins (``parameters: ...``); within a
    budget only split weights meet, the pick is the twin (``mlp->data`` compiles to the same
    program, and a tie goes to the shorter mapping) and the dump runs with its placement."""
    monkeypatch.chdir(ROOT)
    from namax.plan import clear_cache

    clear_cache()
    assert dump_hlo.main(["examples/dump_targets.py:make_mlp_step", "--mesh", "data=8", "--plan",
                          "--plan-parameters", "0", "--memory-budget-mb", "0.003", "--stage", "summary"]) == 0
    out = capsys.readouterr().out
    table, summary = out.split("==== summary ====")
    first_row = re.search(r"^\| 1 \| ([^|]+) \|", table, re.M).group(1).strip()
    assert first_row == "replicated; parameters: mlp->data", table
    assert "planned parameter mapping (argument 0 and the outputs): {'mlp': 'data'}" in table
    assert re.search(r"collectives: .*all-reduce", summary), summary  # the split weights' gradient


@pytest.mark.parametrize("argv, message", [
    (["--plan"], "dump-hlo: --plan needs --mesh"),
    (["--mesh", "data=2", "--plan-parameters", "0"], "dump-hlo: --plan-parameters applies to --plan"),
    (["--plan", "--mesh", "data=2", "--plan-parameters", "3"],
     "dump-hlo: --plan-parameters 3: the target has 3 positional arguments"),
    (["--plan", "--mesh", "data=2", "--axis-resources", "batch=data"],
     "dump-hlo: --plan chooses the mapping: give --plan or --axis-resources, not both"),
    (["--mesh", "data=2", "--memory-budget-mb", "4"], "dump-hlo: --memory-budget-mb applies to --plan"),
    (["--plan", "--mesh", "data=2", "--memory-budget-mb", "0"], "dump-hlo: --memory-budget-mb 0.0: must be positive"),
])
def test_plan_flag_errors(argv, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert dump_hlo.main(["examples/dump_targets.py:make_mlp", *argv]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [err.strip()] and err.startswith(message)
