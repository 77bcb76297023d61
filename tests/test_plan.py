"""namax.plan: enumerate axis mappings, compile the promising ones, rank them by XLA's numbers."""

import math
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

import namax as nx
from namax.partitioning import ShardingError, pspec_for
from namax.plan import Candidate, Plan, PlanError, clear_cache, collective_bytes, time_candidates

f = lambda x, w: nx.dot(x, w, axis="embed")  # noqa: E731  x[batch, embed] @ w[embed, mlp]


@pytest.fixture(scope="module")
def mesh1():
    return Mesh(np.array(jax.devices()[:8]), ("data",))


@pytest.fixture(scope="module")
def mesh2():
    return Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))


def operands(batch, embed, mlp):
    B, E, M = nx.make_axes(batch=batch, embed=embed, mlp=mlp)
    return nx.ones((B, E)), nx.ones((E, M))


def test_plan_returns_only_valid_mappings(mesh2):
    x, w = operands(batch=48, embed=6, mlp=8)  # embed 6: divides 2 (model) only; batch 48: all; mlp 8: all
    p = nx.plan(f, x, w, mesh=mesh2, max_compiles=4)
    sizes = {"data": 4, "model": 2}
    assert isinstance(p, Plan) and 4 <= len(p.table) <= 4 + 2 and p.pruned  # + refine (max(2, 4 // 4))
    arrays = [(("batch", "embed"), (48, 6)), (("embed", "mlp"), (6, 8)), (("batch", "mlp"), (48, 8))]
    for c in p.table + p.pruned:
        for name, target in c.mapping.items():
            axes = (target,) if isinstance(target, str) else target
            assert {"batch": 48, "embed": 6, "mlp": 8}[name] % math.prod(sizes[a] for a in axes) == 0
        for names, shape in arrays:
            pspec_for(names, shape, c.mapping, mesh2, strict=True)  # raises ShardingError if invalid
    assert all(c.compiled and c.error is None for c in p.table)
    assert not any(c.compiled for c in p.pruned)
    assert "embed" not in p.mapping or p.mapping["embed"] == "model"
    assert p.mapping == p.table[0].mapping and p.best is p.table[0]


def test_toy_matmul_large_batch_small_weight_picks_batch_on_data(mesh1):
    x, w = operands(batch=4096, embed=64, mlp=64)
    p = nx.plan(f, x, w, mesh=mesh1)
    assert p.mapping == {"batch": "data"}
    by_mapping = {tuple(sorted(c.mapping.items())): c for c in p.table}
    assert set(by_mapping) == {(), (("batch", "data"),), (("embed", "data"),), (("mlp", "data"),)}
    best = p.best
    assert best.collective_total == 0
    assert by_mapping[(("embed", "data"),)].collectives["all-reduce"] > 0  # contracting a sharded name
    costs = [c.predicted_cost for c in p.table]
    assert costs == sorted(costs)


def test_memory_budget_rules_out_replicating_the_weight(mesh1):
    x, w = operands(batch=8, embed=1024, mlp=1024)  # w: 4 MiB; replicated it alone breaks a 2 MiB budget
    budget = 2 * 2 ** 20
    p = nx.plan(f, x, w, mesh=mesh1, memory_budget=budget)
    assert set(p.mapping) & {"embed", "mlp"}, p.mapping
    assert p.best.fits_budget and p.best.memory_per_device <= budget
    for c in p.table:
        assert c.fits_budget == (c.memory_per_device <= budget)
    fits = [c.fits_budget for c in p.table]
    assert fits == sorted(fits, reverse=True)  # in-budget rows first, over-budget rows marked and last
    assert not all(fits)
    replicated = next(c for c in p.table if c.mapping == {})
    assert replicated.memory_per_device > budget and not replicated.fits_budget


def test_no_candidate_within_budget_raises_with_the_table(mesh1):
    x, w = operands(batch=8, embed=256, mlp=256)
    with pytest.raises(PlanError, match=r"no candidate fits memory_budget=1000 bytes per device .*smallest needs") as e:
        nx.plan(f, x, w, mesh=mesh1, memory_budget=1000)
    assert e.value.plan.table and not any(c.fits_budget for c in e.value.plan.table)


def direct_collective_bytes(text):
    """Independent count: each collective's result array, its elements times 4 bytes (f32)."""
    out = {}
    for m in re.finditer(r"= f32\[([\d,]*)\]\{[\d,]*\} (all-reduce|all-gather|reduce-scatter|all-to-all|"
                         r"collective-permute)\(", text):
        n = math.prod(int(d) for d in m.group(1).split(",") if d)
        out[m.group(2)] = out.get(m.group(2), 0) + 4 * n
    return out


def test_reported_collective_bytes_equal_a_direct_count_of_the_compiled_hlo(mesh2):
    x, w = operands(batch=64, embed=32, mlp=16)
    cands = [{"embed": "data"}, {"embed": ("data", "model")}, {"batch": "data", "embed": "model"}, {"batch": "data"}]
    p = nx.plan(f, x, w, mesh=mesh2, candidates=cands)
    assert sorted(map(str, (c.mapping for c in p.table))) == sorted(map(str, cands))
    for c in p.table:
        placed = nx.shard((x, w), c.mapping, mesh2)
        compiled = nx.namedjit(f, axis_resources=c.mapping, mesh=mesh2).lower(*placed).compile()
        direct = direct_collective_bytes(compiled.as_text())
        assert {k: b for k, b in c.collectives.items() if b} == direct
        mem = compiled.memory_analysis()
        assert c.memory_per_device == mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
        assert c.flops == compiled.cost_analysis()["flops"]
    assert sum(p.table[i].collective_total for i in range(4)) > 0


def test_collective_bytes_reads_result_shapes():
    text = ("  %a = f32[4,8]{1,0} all-reduce(%x), to_apply=%add\n"
            "  %b = bf16[16]{0} all-gather(%y), dimensions={0}\n"
            "  %c = f32[2]{0} reduce-scatter(%z), dimensions={0}\n"
            "  %d = s8[3,3]{1,0} collective-permute(%a), source_target_pairs={{0,1}}\n"
            "  %e = f32[4,8]{1,0} add(%all-reduce.1, %all-gather.2)\n")
    assert collective_bytes(text) == {"all-reduce": 4 * 32, "all-gather": 2 * 16, "reduce-scatter": 4 * 2,
                                      "all-to-all": 0, "collective-permute": 9}


def test_plan_is_cached_by_program_and_mesh(mesh1, mesh2):
    clear_cache()
    x, w = operands(batch=64, embed=16, mlp=16)
    t = time.perf_counter()
    p = nx.plan(f, x, w, mesh=mesh1)
    first = time.perf_counter() - t
    t = time.perf_counter()
    again = nx.plan(lambda a, b: nx.dot(a, b, axis="embed"), x, w, mesh=mesh1)  # same program
    second = time.perf_counter() - t
    assert again is p and second < first / 2
    assert nx.plan(f, x, w, mesh=mesh2, max_compiles=2) is not p  # another mesh, another plan


def test_plain_code_named_by_in_axes(mesh1):
    x, w = jnp.ones((4096, 64)), jnp.ones((64, 64))
    p = nx.plan(lambda x, w: jnp.tanh(x @ w), x, w, mesh=mesh1, in_axes=(("batch", "embed"), ("embed", "mlp")))
    assert p.mapping == {"batch": "data"}
    assert p.names == {"batch": 4096, "embed": 64, "mlp": 64}


def test_table_prints_as_markdown(mesh1):
    x, w = operands(batch=64, embed=16, mlp=16)
    p = nx.plan(f, x, w, mesh=mesh1, candidates=[{}, {"batch": "data"}])
    lines = str(p).splitlines()
    assert lines[2].startswith("| rank | mapping | predicted cost") and lines[3].startswith("|---|")
    assert len(lines) == 4 + 2
    assert {lines[4].split(" | ")[1], lines[5].split(" | ")[1]} == {"replicated", "batch->data"}


def test_bad_arguments_are_named_before_xla(mesh1):
    x, w = operands(batch=64, embed=16, mlp=16)
    with pytest.raises(ValueError, match=r"candidate 0 \{'heads': 'data'\} maps \['heads'\], which the program "
                                         r"does not have"):
        nx.plan(f, x, w, mesh=mesh1, candidates=[{"heads": "data"}])
    with pytest.raises(ShardingError, match=r"candidate 1 .*axis 'batch' is mapped to mesh axis 'model', but "
                                            r"the mesh has axes \('data',\)"):
        nx.plan(f, x, w, mesh=mesh1, candidates=[{}, {"batch": ("data", "model")}])
    with pytest.raises(ShardingError, match=r"candidate 0 .*mesh axis 'data' is used twice"):
        nx.plan(f, x, w, mesh=mesh1, candidates=[{"batch": "data", "mlp": "data"}])
    with pytest.raises(TypeError, match=r"mesh= must be a jax.sharding.Mesh, got dict"):
        nx.plan(f, x, w, mesh={"data": 8})
    with pytest.raises(ValueError, match=r"memory_budget=0 must be a positive number"):
        nx.plan(f, x, w, mesh=mesh1, memory_budget=0)


def test_candidate_defaults():
    c = Candidate({"batch": "data"})
    assert not c.compiled and c.fits_budget and c.collective_total == 0


def test_explicit_mesh_plans_like_auto():
    mesh = jax.make_mesh((8,), ("data",))  # jax 0.10: Explicit axes
    x, w = operands(batch=4096, embed=64, mlp=64)
    p = nx.plan(f, x, w, mesh=mesh)
    assert p.mapping == {"batch": "data"} and p.best.collective_total == 0


def test_docstring_examples_run():
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module("namax.plan"), verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_readme_planning_example_says_what_it_gives():
    import pathlib

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Planning a mapping"):readme.index("## Benchmarks")]
    ns: dict = {}
    exec(re.findall(r"```python\n(.*?)```", section, re.S)[0], ns)
    assert ns["planned"].mapping == {"batch": "data"} and ns["tight"].mapping == {"mlp": "data"}
    shown = [row.split(" | ")[1] for row in section.splitlines() if re.match(r"\| \d+ \|", row)]
    assert shown == [line.split(" | ")[1] for line in str(ns["planned"]).splitlines()[4:]]


def _benchmark():
    import importlib.util
    import pathlib
    import sys

    folder = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))  # the script imports benchmarks/namedjit.py as its neighbour
    spec = importlib.util.spec_from_file_location("plan_benchmark", folder / "plan.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.slow
@pytest.mark.parametrize("program,mesh,budget,compiles", [("block", "4,2", True, "4"), ("hf-gpt2", "8,1", False, "4")])
def test_benchmark_pick_is_predicted_no_worse_than_every_hand_written_mapping(program, mesh, budget, compiles, capsys):
    """The plan's pick (within a budget replicated parameters cannot meet, for the block) is
    predicted no slower than each hand-written mapping that fits, and fits itself."""
    bench = _benchmark()
    assert bench.spearman([1, 2, 3, 4], [2, 1, 4, 3]) == pytest.approx(0.6)
    out = bench.main(["--program", program, "--size", "small", "--mesh", mesh, "--candidates", "7",
                      "--max-compiles", compiles, "--runs", "1", "--steps", "1"] + ["--budget-below-replicated"] * budget)
    assert out["count"] >= 5 and -1.0 <= out["spearman"] <= 1.0 and out["fits"]
    pick = out["plan"].best
    limit = out["budget"] or math.inf
    assert pick.memory_per_device <= limit
    others = [c for c, _ in out["rows"] if c.text != pick.text and c.memory_per_device <= limit]
    assert others and pick.predicted_cost <= min(c.predicted_cost for c in others) * 1.000001
    if budget:
        dp = next(c for c, _ in out["rows"] if c.mapping == {"batch": ("data", "model")} and c.parameter_mapping is None)
        assert dp.memory_per_device > out["budget"]  # replicated parameters do not fit
    text = capsys.readouterr().out
    assert "plan's pick / best hand-written" in text and "| **" in text


def test_measure_times_the_best_candidates_and_picks_the_fastest(mesh2):
    x, w = operands(batch=64, embed=32, mlp=16)
    p = nx.plan(f, x, w, mesh=mesh2, max_compiles=4, measure=2, measure_runs=2)
    timed = [c for c in p.table if c.measured is not None]
    assert len(timed) == 2 and p.table[:2] == timed and p.best is timed[0]
    assert 0 < timed[0].measured <= timed[1].measured
    assert all(c.executable is None for c in p.table)  # kept only while timing (keep_compiled=False)
    unmeasured = nx.plan(f, x, w, mesh=mesh2, max_compiles=4)
    assert {c.text for c in timed} == {c.text for c in unmeasured.table[:2]}  # the two best predicted
    assert "| measured step |" in str(p) and all(c.measured is None for c in unmeasured.table)
    with pytest.raises(ValueError, match=r"measure=-1 must be >= 0"):
        nx.plan(f, x, w, mesh=mesh2, measure=-1)
    with pytest.raises(ValueError, match=r"candidate batch->\(data,model\) has no compiled program"):
        time_candidates([Candidate({"batch": ("data", "model")})], x, w, mesh=mesh2)


def test_benchmark_times_one_program_once():
    """Mappings that compile to the same HLO (up to the module's name) share one row and one
    timing; the labels join with ``=``."""
    from types import SimpleNamespace as NS

    bench = _benchmark()

    def cand(text, hlo):
        return NS(text=text, executable=NS(as_text=lambda: hlo))

    a, b, c = cand("batch->data", "HloModule jit_a\nENTRY x"), cand("batch,embed->data", "HloModule jit_b\nENTRY x"), \
        cand("embed->data", "HloModule jit_a\nENTRY y")
    labels = {"batch->data": "DP", "batch,embed->data": "plan", "embed->data": ""}
    kept, same = bench.same_programs([a, b, c], labels, key=lambda c: c.text)
    assert kept == [a, c]
    assert labels["batch->data"] == "DP=plan" and same == {"batch->data": ["batch,embed->data"]}


def test_fsdp_twins_shard_the_parameters_over_the_axes_the_mapping_leaves_free(mesh2):
    x, w = operands(batch=64, embed=32, mlp=16)
    g = lambda w, x: nx.dot(x, w, axis="embed")  # noqa: E731  parameters first
    p = nx.plan(g, w, x, mesh=mesh2, parameters=0, candidates=[
        {"batch": ("data", "model")}, ({"batch": ("data", "model")}, {"embed": ("data", "model")})])
    by_text = {c.text: c for c in p.table}
    assert set(by_text) == {"batch->(data,model)", "batch->(data,model); parameters: embed->(data,model)"}
    fsdp = by_text["batch->(data,model); parameters: embed->(data,model)"]
    assert fsdp.collectives["all-gather"] > 0  # the weight is gathered where it is used
    assert by_text["batch->(data,model)"].collectives["all-gather"] == 0
    auto = nx.plan(g, w, x, mesh=mesh2, parameters=0, max_compiles=4)
    twins = [c for c in auto.table + auto.pruned if c.parameter_mapping is not None]
    assert twins
    for c in twins:
        assert set(c.mapping.items()) <= set(c.parameter_mapping.items())
        pspec_for(("embed", "mlp"), (32, 16), c.parameter_mapping, mesh2, strict=True)
    with pytest.raises(ValueError, match=r"parameters=5 is not the position of one of the 2 arguments"):
        nx.plan(g, w, x, mesh=mesh2, parameters=5)
    with pytest.raises(ValueError, match=r"candidate 0 has a parameter mapping but parameters=None"):
        nx.plan(g, w, x, mesh=mesh2, candidates=[({}, {"embed": "data"})])


def test_plan_namedjit_runs_the_planned_fsdp_mapping(mesh1):
    x, w = operands(batch=64, embed=64, mlp=32)
    g = lambda w, x: nx.dot(x, w, axis="embed")  # noqa: E731
    p = nx.plan(g, w, x, mesh=mesh1, parameters=0,
                candidates=[({"batch": "data"}, {"batch": "data", "embed": "data"})])
    assert p.parameter_mapping == {"batch": "data", "embed": "data"} and p.mapping == {"batch": "data"}
    w = nx.named(jax.random.normal(jax.random.key(0), (64, 32)), w.axes)
    x = nx.named(jax.random.normal(jax.random.key(1), (64, 64)), x.axes)
    jitted = p.namedjit(g, mesh=mesh1)
    assert jitted.in_axis_resources == {0: p.parameter_mapping} and jitted.axis_resources == p.mapping
    out = jitted(w, x)
    np.testing.assert_allclose(np.asarray(out.array), np.asarray(x.array @ w.array), rtol=1e-5, atol=1e-5)


def test_near_duplicate_mappings_are_compiled_once(mesh2):
    x, w = operands(batch=64, embed=32, mlp=16)
    p = nx.plan(f, x, w, mesh=mesh2, max_compiles=8)
    items = [frozenset(c.mapping.items()) for c in p.table if c.parameter_mapping is None]
    for a in items:  # no compiled mapping is another plus entries the estimate says buy nothing
        for b in items:
            if a < b:
                ca = next(c for c in p.table if frozenset(c.mapping.items()) == a)
                cb = next(c for c in p.table if frozenset(c.mapping.items()) == b)
                assert cb.estimate < ca.estimate * (1 - 0.01) or cb.estimated_memory < ca.estimated_memory * 0.99


def test_refine_compiles_the_first_rounds_best_without_one_entry(mesh2):
    x, w = operands(batch=64, embed=32, mlp=16)
    one = nx.plan(f, x, w, mesh=mesh2, max_compiles=1, refine=0)
    assert len(one.table) == 1
    first = one.table[0]
    refined = nx.plan(f, x, w, mesh=mesh2, max_compiles=1, refine=3)
    assert refined.table[0].predicted_cost <= first.predicted_cost
    extra = [c for c in refined.table if c.mapping != first.mapping]
    assert 0 < len(extra) <= 3 and all(c.compiled for c in extra)
    assert not {frozenset(c.mapping.items()) for c in extra} & {frozenset(c.mapping.items()) for c in refined.pruned}
    for c in extra:  # each a neighbour of a compiled best: one entry fewer
        assert any(set(c.mapping.items()) < set(b.mapping.items()) and len(b.mapping) == len(c.mapping) + 1
                   for b in refined.table)
