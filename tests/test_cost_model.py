"""CostModel: the formula, and constants timed on a mesh (CostModel.calibrate)."""

import math

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

import namax as nx
from namax.cost_model import CostModel
from namax.plan import CostModel as PlanCostModel


@pytest.fixture(scope="module")
def calibrated():
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    return mesh, CostModel.calibrate(mesh, runs=2)


def test_plan_uses_the_same_cost_model():
    assert PlanCostModel is CostModel


def test_seconds_is_the_sum_of_its_terms():
    m = CostModel(peak_flops=2.0, mem_bw=4.0, link_bw=8.0, collective_latency=0.5)
    assert m.seconds(2.0, 4.0, 8.0, collective_ops=2) == pytest.approx(1 + 1 + 1 + 1)


def test_calibrate_times_every_constant_on_the_mesh(calibrated):
    _, model = calibrated
    default = CostModel()
    for field in ("peak_flops", "mem_bw", "link_bw", "collective_latency"):
        value = getattr(model, field)
        assert math.isfinite(value) and value > 0, (field, value)
        assert value != getattr(default, field), field  # measured, not the default left in place
    # rates of a CPU host, within generous physical bounds (catches unit mix-ups, not speed)
    assert 1e7 < model.peak_flops < 1e14 and 1e7 < model.mem_bw < 1e13
    assert 1e6 < model.link_bw < 1e13 and 1e-8 < model.collective_latency < 1e-1


def test_plan_with_a_calibrated_model_ranks_by_it(calibrated):
    mesh, model = calibrated
    B, E, M = nx.make_axes(batch=64, embed=32, mlp=16)
    x, w = nx.ones((B, E)), nx.ones((E, M))
    p = nx.plan(lambda x, w: nx.dot(x, w, axis="embed"), x, w, mesh=mesh, max_compiles=4, cost_model=model)
    assert p.cost_model is model
    for c in p.table:
        assert c.predicted_cost == pytest.approx(model.seconds(c.flops, c.bytes_accessed, c.collective_total,
                                                               c.collective_ops))
    assert [c.predicted_cost for c in p.table] == sorted(c.predicted_cost for c in p.table)
