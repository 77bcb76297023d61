"""Sharding inference from axis mappings on 8 simulated CPU devices (data=4 x model=2)."""

import collections
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import namax as nx
from namax.jit import namedjit
from namax.partitioning import ShardingError, axis_mapping, fsdp, pspec_for, shard

Batch, Pos, Embed, Mlp, Head, Key = nx.make_axes(batch=8, position=16, embed=32, mlp=64, head=4, key=8)
KPos = Pos.alias("key_position")

COLLECTIVE = re.compile(r"\s(all-gather|reduce-scatter|all-reduce|all-to-all|collective-permute)(?:-start)?\(")


def collectives(compiled_text: str) -> collections.Counter:
    return collections.Counter(m.group(1) for line in compiled_text.splitlines() if (m := COLLECTIVE.search(line)))


def auto_mesh():
    return jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)


def rnd(key, axes, scale=1.0):
    return nx.named(jax.random.normal(jax.random.PRNGKey(key), tuple(a.size for a in axes)) * scale, axes)


def init_params():
    return {
        "w_in": rnd(1, (Embed, Mlp), 0.2),
        "w_out": rnd(2, (Mlp, Embed), 0.2),
        "wq": rnd(3, (Embed, Head, Key), 0.2),
        "wk": rnd(4, (Embed, Head, Key), 0.2),
        "wv": rnd(5, (Embed, Head, Key), 0.2),
        "wo": rnd(6, (Head, Key, Embed), 0.2),
    }


def softmax(x, axis):
    e = nx.exp(x - nx.max(x, axis))
    return e / nx.sum(e, axis)


def block(p, x):
    q = nx.dot(x, p["wq"], axis=Embed)
    k = nx.dot(x, p["wk"], axis=Embed).rename({"position": "key_position"})
    v = nx.dot(x, p["wv"], axis=Embed).rename({"position": "key_position"})
    scores = softmax(nx.dot(q, k, axis=Key) / np.sqrt(Key.size), KPos)
    x = x + nx.dot(nx.dot(scores, v, axis=KPos), p["wo"], axis=(Head, Key))
    h = nx.tanh(nx.dot(x, p["w_in"], axis=Embed))
    return x + nx.dot(h, p["w_out"], axis=Mlp)


def loss(p, x):
    y = block(p, x)
    return nx.mean(y * y).array


def step(p, x):
    return jax.value_and_grad(loss)(p, x)


@pytest.fixture(scope="module")
def data():
    return init_params(), rnd(0, (Batch, Pos, Embed))


def check_equal(out, ref):
    np.testing.assert_allclose(out[0], ref[0], rtol=1e-4)
    for k in ref[1]:
        np.testing.assert_allclose(out[1][k].array, ref[1][k].array, rtol=1e-3, atol=1e-5)


def test_tensor_parallel_matches_single_device(data):
    params, x = data
    ref = jax.jit(step)(params, x)
    f = namedjit(step, axis_resources={"batch": "data", "mlp": "model", "head": "model"}, mesh=auto_mesh())
    out = f(params, x)
    check_equal(out, ref)
    counts = collectives(f.lower(params, x).compile().as_text())
    assert counts["all-reduce"] >= 1, counts
    # gradients keep the tensor-parallel layout of the weights
    assert out[1]["w_in"].array.sharding.spec == P(None, "model")
    assert out[1]["wq"].array.sharding.spec == P(None, "model")


def test_fsdp_matches_single_device_and_gathers_parameters(data):
    params, x = data
    ref = jax.jit(step)(params, x)
    mesh = auto_mesh()
    params_sharded = shard(params, {"embed": "data"}, mesh)
    assert params_sharded["w_in"].array.sharding.spec == P("data")
    f = fsdp(step, {"embed": "data"}, {"batch": "data"}, mesh=mesh)
    out = f(params_sharded, x)
    check_equal(out, ref)
    counts = collectives(f.lower(params_sharded, x).compile().as_text())
    assert counts["all-gather"] >= 1, counts  # parameters gathered where used
    assert counts["all-reduce"] + counts["reduce-scatter"] >= 1, counts  # gradients reduced
    # gradients come back sharded like the parameters, never fully replicated
    for name, g in out[1].items():
        assert "data" in jax.tree_util.tree_leaves(tuple(g.array.sharding.spec)), (name, g.array.sharding)


def test_axis_mapping_context_and_explicit_mesh(data):
    params, x = data
    ref = jax.jit(step)(params, x)
    mesh = jax.make_mesh((4, 2), ("data", "model"))  # Explicit axes by default in jax 0.10
    f = namedjit(step)
    with jax.set_mesh(mesh), axis_mapping({"batch": "data", "mlp": "model"}):
        out = f(params, shard(x))
    check_equal(out, ref)
    assert out[1]["w_in"].array.sharding.spec == P(None, "model")


def test_mapping_changes_are_new_cache_entries(data):
    params, x = data
    f = namedjit(loss, mesh=auto_mesh())
    with axis_mapping({"batch": "data"}):
        f(params, x)
        f(params, x)
    with axis_mapping({"batch": "data", "mlp": "model"}):
        f(params, x)
    assert f.trace_count == 2


def test_intermediates_carry_constraints(data):
    params, x = data
    f = namedjit(loss, axis_resources={"batch": "data", "mlp": "model"}, mesh=auto_mesh())
    text = f.lower(params, x).as_text()
    assert "sdy.sharding_constraint" in text
    assert '{"data"}' in text and '{"model"}' in text


def test_pspec_rules():
    mesh = auto_mesh()
    assert pspec_for(("batch", "embed"), (8, 32), {"batch": "data", "embed": "model"}, mesh) == P("data", "model")
    assert pspec_for(("batch", "embed"), (8, 32), {"batch": ("data", "model")}, mesh) == P(("data", "model"))
    with pytest.raises(ShardingError, match="mesh axis 'nope'.*mesh has axes"):
        pspec_for(("batch",), (8,), {"batch": "nope"}, mesh)
    with pytest.raises(ShardingError, match="axis 'batch' of size 6 does not divide.*size 4"):
        pspec_for(("batch",), (6,), {"batch": "data"}, mesh)
    with pytest.raises(ShardingError, match="mesh axis 'data' is used twice.*'batch'.*'embed'"):
        pspec_for(("batch", "embed"), (8, 32), {"batch": "data", "embed": "data"}, mesh)
    # inferred intermediates replicate instead of failing
    assert pspec_for(("batch", "embed"), (8, 32), {"batch": "data", "embed": "data"}, mesh, strict=False) == P("data")


def test_shard_errors_name_the_axis():
    mesh = auto_mesh()
    bad = rnd(0, (Batch.resize(6), Embed))
    with pytest.raises(ShardingError, match="'batch' of size 6"):
        shard(bad, {"batch": "data"}, mesh)
    with pytest.raises(ValueError, match="no axis mapping"):
        shard(bad)


def plain_mlp(x, w1, w2):
    """Unmodified jnp code: no namax anywhere."""
    h = jax.nn.gelu(x @ w1)
    return jnp.tanh(h @ w2)


def test_plain_jnp_code_named_on_inputs_is_sharded():
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 32))
    w1 = jax.random.normal(jax.random.PRNGKey(1), (32, 64)) * 0.2
    w2 = jax.random.normal(jax.random.PRNGKey(2), (64, 32)) * 0.2
    f = namedjit(plain_mlp, in_axes=(("batch", "embed"), ("embed", "mlp"), ("mlp", "embed")),
                 axis_resources={"batch": "data", "mlp": "model"}, mesh=auto_mesh())
    out = f(x, w1, w2)
    # plain code gets plain outputs back, placed by the names that travelled to them
    assert type(out) is type(x)
    np.testing.assert_allclose(out, plain_mlp(x, w1, w2), rtol=1e-5, atol=1e-6)
    assert out.sharding.spec == P("data")
    named = namedjit(plain_mlp, in_axes=(("batch", "embed"), ("embed", "mlp"), ("mlp", "embed")),
                     axis_resources={"batch": "data", "mlp": "model"}, mesh=auto_mesh(), out_axes="infer")
    out = named(x, w1, w2)
    assert isinstance(out, nx.NamedArray) and out.axis_names == ("batch", "embed")
    text = f.lower(x, w1, w2).as_text()
    # the hidden activation (batch, mlp) is constrained to both mesh axes
    assert '<@mesh, [{"data"}, {"model"}]>' in text
    assert out.array.sharding.spec == P("data")


def test_plain_code_names_without_mesh():
    f = namedjit(lambda x, w: jnp.sum(x @ w, axis=0), in_axes=(("batch", "embed"), ("embed", "mlp")),
                 out_axes="infer")
    out = f(jnp.ones((4, 3)), jnp.ones((3, 5)))
    assert out.axis_names == ("mlp",)
    np.testing.assert_allclose(out.array, np.full(5, 12.0))
    # the names pass tags plain code, so its StableHLO reads by name too
    lowered, report = f.lower_with_report(jnp.ones((4, 3)), jnp.ones((3, 5)))
    assert 'named_axes = "batch,mlp"' in lowered.as_text()
    assert report.arguments_named == 2 and report.results_named == 1
    with pytest.raises(ValueError, match="in_axes has 2 entries for 1 positional"):
        f(jnp.ones((4, 3)))


def test_explicit_shardings_in_user_code_are_respected():
    mesh = jax.make_mesh((4, 2), ("data", "model"))  # Explicit

    def f(x, w):
        y = jnp.einsum("be,em->bm", x.array, w.array, out_sharding=P("data", "model"))
        return nx.named(y, (Batch, Mlp))

    x = rnd(0, (Batch, Embed))
    w = rnd(1, (Embed, Mlp))
    with jax.set_mesh(mesh):
        xs = nx.NamedArray(jax.device_put(x.array, NamedSharding(mesh, P("data"))), x.axes)
        ws = nx.NamedArray(jax.device_put(w.array, NamedSharding(mesh, P(None, "model"))), w.axes)
        out = namedjit(f, axis_resources={"batch": "data", "mlp": "model"}, explicit_sharding=True)(xs, ws)
    np.testing.assert_allclose(out.array, np.asarray(x.array) @ np.asarray(w.array), rtol=1e-5, atol=1e-5)
    assert out.array.sharding.spec == P("data", "model")


@pytest.mark.parametrize("kind", ["Explicit", "Auto"])
def test_shard_inside_jit_uses_the_context_mesh(kind):
    """Inside ``jax.jit`` under ``jax.set_mesh`` only the abstract mesh is known: ``shard``
    places by it (a reshard on Explicit axes, a constraint on Auto ones)."""
    axis_type = getattr(jax.sharding.AxisType, kind)
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(axis_type,) * 2)
    x = nx.named(jnp.arange(32.0).reshape(8, 4), ("batch", "embed"))
    with jax.set_mesh(mesh):
        out = jax.jit(lambda x: nx.shard(x, {"batch": "data", "embed": "model"}) * 2)(x)
    assert tuple(out.array.sharding.spec) == ("data", "model")
    np.testing.assert_array_equal(out.array, x.array * 2)


def test_mesh_argument_with_a_mapping_that_places_nothing():
    """An Explicit mesh given as ``mesh=`` with a mapping that places no input or output
    runs on the mesh (replicated) instead of failing on a one-device assignment."""
    mesh = jax.make_mesh((4, 2), ("data", "model"))
    x = nx.named(jnp.arange(8.0), ("a",))
    for mapping in ({}, {"b": "model"}):
        out = namedjit(nx.exp, axis_resources=mapping, mesh=mesh)(x)
        np.testing.assert_allclose(out.array, np.exp(np.arange(8.0)), rtol=1e-6)
        assert out.array.sharding.is_equivalent_to(NamedSharding(mesh, P()), 1)


@pytest.mark.parametrize("kind", ["Explicit", "Auto"])
def test_outputs_whose_names_map_to_nothing_are_replicated(kind):
    """Outputs are placed exactly by their names: an output with no mapped name is replicated
    on both mesh kinds, not left as XLA propagated its input's sharding."""
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(getattr(AxisType, kind),) * 2)
    x = nx.named(jnp.arange(8.0), ("a",))
    out = namedjit(lambda x: x.rename({"a": "b"}), axis_resources={"a": "model"}, mesh=mesh)(x)
    assert tuple(out.array.sharding.spec) in ((), (None,))
    np.testing.assert_array_equal(out.array, x.array)


def test_placed_input_on_an_explicit_mesh_is_not_gathered():
    """An input already placed by its names stays placed: the compiled program has no
    all-gather (a replicated constraint is added only when the mapping places nothing)."""
    mesh = jax.make_mesh((8,), ("data",))
    B, E, M = nx.make_axes(batch=64, embed=8, mlp=8)
    x = nx.shard(nx.ones((B, E)), {"batch": "data"}, mesh)
    f = namedjit(lambda x, w: nx.dot(x, w, axis="embed"), axis_resources={"batch": "data"}, mesh=mesh)
    text = f.lower(x, nx.ones((E, M))).compile().as_text()
    assert "all-gather" not in text
    np.testing.assert_allclose(f(x, nx.ones((E, M))).array, np.full((64, 8), 8.0))
