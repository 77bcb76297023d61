"""The cost report by axis name (namax.tools.costs): collectives tied to the names they move
and the user's source line, bytes equal to those counted from the compiled HLO, memory
per device by name; through namax.dump(stages="costs") and the dump-hlo CLI."""

import contextlib
import inspect
import io
import os
import sys

import jax
import pytest
from jax.sharding import AxisType

import namax as nx
from namax.dump import dump
from namax.plan import KINDS, collective_bytes
from namax.tools import dump_hlo
from namax.tools.costs import CostReport, device_groups, mesh_axes_of, read_collectives
from namax.tools.stages import Program

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = os.path.join(ROOT, "examples", "dump_targets.py")
MESH = {"data": 4, "model": 2}

Batch, Embed, Mlp = nx.make_axes(batch=16, embed=64, mlp=256)


def matmul(x, w):
    return nx.dot(x, w, axis=Embed)  # contracts embed


def two_layer_mlp(x, w1, w2):
    h = nx.tanh(nx.dot(x, w1, axis=Embed))  # layer 1
    return nx.dot(h, w2, axis=Mlp)  # layer 2


def reshaped_mlp(x, w):
    h = nx.dot(x, w, axis=Embed)  # mlp stays split
    return nx.cumsum(h, Mlp)  # a scan along the split mlp: gathered first


def _line(fn, marker):
    """The line number of the line of ``fn`` that holds ``marker`` (never hard-coded)."""
    lines, start = inspect.getsourcelines(fn)
    (i,) = [k for k, text in enumerate(lines) if marker in text]
    return start + i


def _mesh():
    return jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2, devices=jax.devices()[:8])


def _inputs():
    x = nx.named(jax.random.normal(jax.random.key(0), (16, 64)), (Batch, Embed))
    w1 = nx.named(jax.random.normal(jax.random.key(1), (64, 256)), (Embed, Mlp))
    w2 = nx.named(jax.random.normal(jax.random.key(2), (256, 64)), (Mlp, Embed))
    return x, w1, w2


def _report(fn, args, mapping):
    p = Program(fn, args, axis_resources=mapping, mesh=_mesh())
    return p, p.costs


def _assert_totals(p, report):
    hlo = p.compiled.as_text()
    assert report.totals == collective_bytes(hlo)
    for kind in KINDS:
        assert sum(c.nbytes for c in report.collectives if c.kind == kind) == collective_bytes(hlo)[kind]


def test_matmul_all_reduce_moves_the_contracted_sharded_name():
    x, w1, _ = _inputs()
    p, r = _report(matmul, (x, w1), {"batch": "data", "embed": "model"})
    _assert_totals(p, r)
    (c,) = r.collectives
    assert c.kind == "all-reduce" and c.mesh_axes == ("model",)
    assert c.names == ("embed",) and c.basis == "op" and c.primitive == "dot_general"
    assert c.source.file == __file__ and c.source.line == _line(matmul, "contracts embed")
    assert c.nbytes == 4 * (16 // 4) * 256  # f32[batch/4, mlp]
    assert f"test_costs.py:{c.source.line}" in str(r) and "moves embed" in str(r)


def test_two_layer_mlp_rows_and_totals():
    x, w1, w2 = _inputs()
    p, r = _report(two_layer_mlp, (x, w1, w2), {"batch": "data", "mlp": "model"})
    _assert_totals(p, r)
    reduces = [c for c in r.collectives if c.kind == "all-reduce"]
    assert reduces and all(c.names == ("mlp",) and c.mesh_axes == ("model",) for c in reduces)
    assert {c.source.line for c in reduces} == {_line(two_layer_mlp, "layer 2")}
    assert r.bytes_by_name == {"mlp": sum(c.nbytes for c in r.collectives)}


def test_all_gather_names_the_gathered_dim():
    x, w1, _ = _inputs()
    p, r = _report(reshaped_mlp, (x, w1), {"batch": "data", "mlp": "model"})
    _assert_totals(p, r)
    gathers = [c for c in r.collectives if c.kind == "all-gather"]
    assert gathers, str(r)
    for c in gathers:
        assert c.names == ("mlp",) and c.mesh_axes == ("model",)
        assert c.source.file == __file__ and c.source.line == _line(reshaped_mlp, "a scan along")


def test_gradient_all_reduce_over_data_moves_batch():
    x, w1, w2 = _inputs()

    def loss(w1, w2, x):
        y = two_layer_mlp(x, w1, w2)
        return nx.mean(y * y).array

    p, r = _report(jax.grad(loss, argnums=(0, 1)), (w1, w2, x), {"batch": "data", "mlp": "model"})
    _assert_totals(p, r)
    over_data = [c for c in r.collectives if c.mesh_axes == ("data",)]
    assert over_data and all(c.names == ("batch",) for c in over_data)
    lines = {_line(two_layer_mlp, "layer 1"), _line(two_layer_mlp, "layer 2")}
    assert all(c.source is not None and c.source.line in lines for c in over_data), str(r)


def test_memory_by_name_ranks_the_biggest_name_first():
    Small, Big = nx.make_axes(small=8, big=4096)
    x = nx.ones((Batch, Small))
    w = nx.ones((Small, Big))
    p, r = _report(lambda x, w: nx.exp(nx.dot(x, w, axis=Small)), (x, w), {"batch": "data", "big": "model"})
    assert [m.name for m in r.memory_by_name] == ["big", "batch", "small"]
    big = r.memory_by_name[0]
    # w [small, big] / model, dot and exp [batch, big] / (data, model): per-device bytes
    assert big.nbytes == 4 * (8 * 4096 // 2 + 2 * 16 * 4096 // 8)
    assert r.buffers[0].type == "f32[small:8,big:4096]" and r.buffers[0].nbytes == 4 * 8 * 4096 // 2
    mem = p.compiled.memory_analysis()
    assert r.argument_bytes == mem.argument_size_in_bytes and r.temp_bytes == mem.temp_size_in_bytes


def test_unsharded_program_has_no_collectives_and_renders():
    x, w1, _ = _inputs()
    r = Program(matmul, (x, w1)).costs
    assert r.collectives == [] and r.totals == {k: 0 for k in KINDS}
    text = str(r)
    assert "collectives: none" in text and "memory per device by axis name" in text
    assert str(CostReport()).startswith("collectives: none")


def test_replica_group_forms_map_to_mesh_axes():
    sizes = {"data": 4, "model": 2}
    for text, axes in [("{{0,1},{2,3},{4,5},{6,7}}", ("model",)), ("[2,4]<=[4,2]T(1,0)", ("data",)),
                       ("mesh['axis_0'=4,'axis_1'=1,'axis_2'=2] {'axis_2'}", ("model",)),
                       ("mesh['axis_0'=4,'axis_1'=2] {'axis_0','axis_1'}", ("data", "model")),
                       ("[1,8]<=[8]", ("data", "model")),
                       ("mesh['axis_0'=2,'axis_1'=1,'axis_2'=4], device_ids=([4,2]T(1,0)) {'axis_0'}", ("model",))]:
        assert mesh_axes_of(device_groups(text), sizes) == axes, text
    assert device_groups("{weird}") is None
    hlo = ('  %ags = (f32[2]{0}, f32[16]{0}) all-gather-start(%q), replica_groups={{0,1}}, dimensions={0}\n'
           '  %agd = f32[16]{0} all-gather-done(%ags)')
    (c,) = read_collectives(hlo)
    assert c.nbytes == 64 == collective_bytes(hlo)["all-gather"] and c.shapes == [("f32", (16,))]


def test_dump_costs_stage():
    x, w1, w2 = _inputs()
    r = dump(two_layer_mlp, x, w1, w2, stages="costs", mesh=MESH, axis_resources={"batch": "data", "mlp": "model"})
    assert list(r.stages) == ["costs"]
    stage = r.stages["costs"]
    assert stage.filename == "07-costs.txt" and isinstance(stage.report, CostReport) and r.costs is stage.report
    assert "moves mlp" in stage.text and f"test_costs.py:{_line(two_layer_mlp, 'layer 2')}" in stage.text
    summary = str(r.summary)
    assert "by name moved: mlp" in summary and "memory per device by axis name: mlp" in summary


def test_dump_hlo_cli_costs_stage():
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    import dump_targets

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = dump_hlo.main([f"{TARGETS}:make_mlp", "--mesh", "data=4,model=2",
                                "--axis-resources", "batch=data,mlp=model", "--stage", "costs"])
    text = out.getvalue()
    assert status == 0, text
    assert "==== 7. costs: cost report by axis name" in text
    second = _line(dump_targets.named_mlp, 'axis="mlp"')
    assert "moves mlp" in text and f"dump_targets.py:{second}" in text
    summary = text.split("==== summary ====")[1]
    assert f"dump_targets.py:{second}" in summary and "memory per device by axis name:" in summary
