"""nx.shard_map (specs from names), nx.set_mesh and nx.debug, on a 4x2 mesh of the 8 CPU devices."""

import pickle

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import namax as nx
import namax.debug as nxd
from namax import ShardingError

Batch, Embed, Mlp = nx.make_axes(batch=8, embed=4, mlp=6)


@pytest.fixture(scope="module")
def mesh():
    assert len(jax.devices()) >= 8, "tests/conftest.py should give 8 CPU devices"
    return jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))


@pytest.fixture(scope="module")
def x():
    return nx.named(jnp.arange(32.0).reshape(8, 4) / 10, ("batch", "embed"))


@pytest.fixture(scope="module")
def w():
    return nx.named(jnp.cos(jnp.arange(24.0)).reshape(4, 6), ("embed", "mlp"))


def mlp(x, w):
    return nx.tanh(nx.dot(x, w, axis="embed"))


# --- values ---------------------------------------------------------------------------------


def test_local_blocks_and_global_outputs_under_set_mesh(mesh, x, w):
    seen = []

    def f(x, w):
        seen.append((x.axes, w.axes))
        return mlp(x, w)

    with jax.set_mesh(mesh), nx.axis_mapping({"batch": "data", "mlp": "model"}):
        out = nx.shard_map(f)(x, w)
    # traced twice (once to learn the output axes); each time with the local blocks
    assert seen == [((Batch.resize(2), Embed), (Embed, Mlp.resize(3)))] * 2
    assert out.axes == (Batch, Mlp)
    assert out.array.sharding.spec == P("data", "model")
    np.testing.assert_allclose(out.array, np.tanh(x.array @ w.array), rtol=1e-5, atol=1e-6)


def test_explicit_mesh_and_axis_mapping(mesh, x, w):
    f = nx.shard_map(mlp, mesh=mesh, axis_mapping={"batch": "data"})
    out = f(x, w)  # no context mesh and no context mapping
    assert out.axes == (Batch, Mlp)
    assert out.array.sharding == NamedSharding(mesh, P("data", None))
    np.testing.assert_allclose(out.array, np.tanh(x.array @ w.array), rtol=1e-5, atol=1e-6)


def test_axis_names_are_by_name_not_position(mesh, x):
    xt = x.rearrange(("embed", "batch"))  # batch is now dimension 1
    out = nx.shard_map(lambda a: a * 2, mesh=mesh, axis_mapping={"batch": "data"})(xt)
    assert out.axes == (Embed, Batch)
    assert out.array.sharding.spec == P(None, "data")
    np.testing.assert_allclose(out.array, xt.array * 2)


def test_collective_inside(mesh, x):
    def f(x):
        local = nx.sum(x, "embed")  # per row: sharded over batch
        total = jax.lax.psum(nx.sum(x).array, "data")  # all rows: replicated
        centred = x - jax.lax.pmean(nx.mean(x).array, "data")
        return local, total, centred

    local, total, centred = nx.shard_map(f, mesh=mesh, axis_mapping={"batch": "data"})(x)
    np.testing.assert_allclose(local.array, x.array.sum(1), rtol=1e-6)
    assert local.axes == (Batch,)
    np.testing.assert_allclose(total, x.array.sum(), rtol=1e-6)
    assert total.shape == ()
    np.testing.assert_allclose(centred.array, x.array - x.array.mean(), rtol=1e-5, atol=1e-6)


def test_gradients_through_shard_map(mesh, x, w):
    def loss_sharded(w):
        f = nx.shard_map(lambda x, w: jax.lax.psum(nx.sum(mlp(x, w) ** 2).array, ("data", "model")))
        return f(x, w)

    def loss(w):
        return jnp.sum(jnp.tanh(x.array @ w) ** 2)

    with jax.set_mesh(mesh), nx.axis_mapping({"batch": "data", "mlp": "model"}):
        value, grad = jax.value_and_grad(loss_sharded)(w)
    np.testing.assert_allclose(value, loss(w.array), rtol=1e-5)
    assert grad.axes == w.axes
    np.testing.assert_allclose(grad.array, jax.grad(loss)(w.array), rtol=1e-5, atol=1e-6)


def test_inside_jit_with_the_context_mesh(mesh, x, w):
    with jax.set_mesh(mesh), nx.axis_mapping({"batch": "data", "mlp": "model"}):
        out = jax.jit(nx.shard_map(mlp))(x, w)
    assert out.axes == (Batch, Mlp)
    np.testing.assert_allclose(out.array, np.tanh(x.array @ w.array), rtol=1e-5, atol=1e-6)


def test_mesh_of_the_axis_mapping_context(mesh, x):
    with nx.axis_mapping({"batch": "data"}, mesh=mesh):
        out = nx.shard_map(lambda a: a + 1)(x)
    assert out.array.sharding.mesh == mesh and out.array.sharding.spec == P("data", None)


def test_tuple_of_mesh_axes(mesh, x):
    out = nx.shard_map(lambda a: a * 3, mesh=mesh, axis_mapping={"batch": ("data", "model")})(x)
    assert out.array.sharding.spec == P(("data", "model"), None)
    np.testing.assert_allclose(out.array, x.array * 3)


def test_kwargs_plain_arrays_and_static_leaves(mesh, x):
    seen = {}

    def f(x, bias, *, scale, label):
        seen["bias"], seen["label"] = bias.shape, label
        return x * scale + nx.named(bias, "embed")

    bias = jnp.arange(4.0)
    out = nx.shard_map(f, mesh=mesh, axis_mapping={"batch": "data"})(x, bias, scale=2.0, label="hi")
    assert seen == {"bias": (4,), "label": "hi"}  # plain arrays replicated, static leaves as they are
    np.testing.assert_allclose(out.array, x.array * 2 + bias)


def test_pytree_arguments_and_outputs(mesh, x, w):
    def f(params, batch):
        h = mlp(batch["x"], params["w"])
        return {"h": h, "norm": jax.lax.psum(nx.sum(h * h).array, "data")}

    out = nx.shard_map(f, mesh=mesh, axis_mapping={"batch": "data"})({"w": w}, {"x": x})
    ref = np.tanh(x.array @ w.array)
    np.testing.assert_allclose(out["h"].array, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["norm"], (ref ** 2).sum(), rtol=1e-5)


def test_decorator_forms(mesh, x):
    @nx.shard_map
    def double(a):
        return a * 2

    @nx.shard_map(mesh=mesh, axis_mapping={"batch": "data"})
    def triple(a):
        return a * 3

    with jax.set_mesh(mesh), nx.axis_mapping({"batch": "data"}):
        np.testing.assert_allclose(double(x).array, x.array * 2)
    np.testing.assert_allclose(triple(x).array, x.array * 3)
    assert triple.__name__ == "triple"


def test_explicit_in_and_out_specs(mesh, x):
    seen = []

    def f(a):
        seen.append(a.axes)
        return a * 2

    out = nx.shard_map(f, mesh=mesh, in_specs=(P(None, "model"),), out_specs=P(None, "model"))(x)
    assert seen == [(Batch, Embed.resize(2))]  # traced once: out_specs given
    assert out.axes == (Batch, Embed) and out.array.sharding.spec == P(None, "model")
    np.testing.assert_allclose(out.array, x.array * 2)


def test_check_vma_catches_an_unreduced_output(mesh, x):
    f = nx.shard_map(lambda a: nx.sum(a), mesh=mesh, axis_mapping={"batch": "data"})  # forgot the psum
    with pytest.raises(ValueError, match="replication"):  # JAX's check, before XLA
        f(x)
    # with the check off (Haliax's default), one device's partial sum comes back
    partial = nx.shard_map(lambda a: nx.sum(a), mesh=mesh, axis_mapping={"batch": "data"}, check_rep=False)(x)
    np.testing.assert_allclose(partial.array, x.array[:2].sum(), rtol=1e-6)


def test_partitioning_spelling():
    assert nx.partitioning.shard_map is nx.shard_map
    assert nx.partitioning.set_mesh is nx.set_mesh


# --- errors before XLA ----------------------------------------------------------------------


def test_size_that_does_not_divide(mesh):
    odd = nx.zeros(nx.make_axes(batch=6, embed=4))
    f = nx.shard_map(lambda a: a, mesh=mesh, axis_mapping={"batch": "data"})
    with pytest.raises(ShardingError, match=r"argument args\[0\]: axis 'batch' of size 6 does not divide over mesh "
                                            r"axes \('data',\) of size 4"):
        f(odd)


def test_mesh_axis_used_twice(mesh, x):
    f = nx.shard_map(lambda a: a, mesh=mesh, axis_mapping={"batch": "data", "embed": "data"})
    with pytest.raises(ShardingError, match=r"argument args\[0\]: mesh axis 'data' is used twice in one array: by "
                                            r"axis 'batch' and by axis 'embed'"):
        f(x)


def test_mesh_axis_used_twice_in_an_output(mesh, x):
    def f(a):
        return a.rename({"embed": "batch2"})  # both batch and batch2 map to data

    g = nx.shard_map(f, mesh=mesh, axis_mapping={"batch": "data", "batch2": "data"})
    with pytest.raises(ShardingError, match=r"output out: mesh axis 'data' is used twice"):
        g(x)


def test_mapping_without_a_mesh(x):
    f = nx.shard_map(lambda a: a, axis_mapping={"batch": "data"})
    with pytest.raises(ValueError, match=r"no mesh: .*axis 'batch' of size 8 of argument args\[0\] is mapped to mesh "
                                         r"axis 'data'"):
        f(x)


def test_mapping_to_a_missing_mesh_axis(mesh, x):
    f = nx.shard_map(lambda a: a, mesh=mesh, axis_mapping={"batch": "replica"})
    with pytest.raises(ShardingError, match=r"axis 'batch' is mapped to mesh axis 'replica', but the mesh has axes "
                                            r"\('data', 'model'\)"):
        f(x)


def test_no_mapping_to_infer_from(mesh, x):
    with pytest.raises(ValueError, match=r"no axis mapping given and none active"):
        nx.shard_map(lambda a: a, mesh=mesh)(x)


def test_given_spec_checked_by_name(mesh, x):
    f = nx.shard_map(lambda a: a, mesh=mesh, in_specs=(P("model", "data"),), out_specs=P("model", "data"))
    with pytest.raises(ShardingError, match=r"argument args\[0\]: axis 'embed' of size 6 does not divide over mesh "
                                            r"axes \('data',\) of size 4 \(spec P\('model', 'data'\)\)"):
        f(nx.zeros(nx.make_axes(batch=8, embed=6)))


def test_non_array_output(mesh, x):
    f = nx.shard_map(lambda a: (a, "done"), mesh=mesh, axis_mapping={"batch": "data"})
    with pytest.raises(TypeError, match=r"output out\[1\] is 'done' \(str\); outputs must be arrays or NamedArrays"):
        f(x)


def test_check_rep_and_check_vma_disagree():
    with pytest.raises(ValueError, match="check_rep=True and check_vma=False disagree"):
        nx.shard_map(lambda a: a, check_rep=True, check_vma=False)


def test_bad_mesh_argument():
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        nx.shard_map(lambda a: a, mesh=("data",))


# --- set_mesh -------------------------------------------------------------------------------


def test_set_mesh_is_a_context_manager(mesh, x):
    assert jax.sharding.get_abstract_mesh().axis_names == ()
    with nx.set_mesh(mesh) as m:
        assert m is mesh
        assert jax.sharding.get_abstract_mesh().axis_names == ("data", "model")
        placed = nx.shard(x, {"batch": "data"})  # namax's sharding sees it
        assert placed.array.sharding == NamedSharding(mesh, P("data"))
    assert jax.sharding.get_abstract_mesh().axis_names == ()


def test_set_mesh_overrides_the_mesh_of_an_axis_mapping(mesh, x):
    one = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    with nx.axis_mapping({"batch": "data"}, mesh=one):
        with nx.set_mesh(mesh):
            assert nx.partitioning.current_partitioning().mesh is mesh
            assert nx.current_axis_mapping() == {"batch": "data"}
            assert nx.shard(x).array.sharding.mesh == mesh
        assert nx.partitioning.current_partitioning().mesh is one


def test_set_mesh_rejects_other_objects():
    with pytest.raises(TypeError, match=r"set_mesh: expected a jax.sharding.Mesh, got \('data',\)"):
        nx.set_mesh(("data",))


# --- debug ----------------------------------------------------------------------------------


def test_visualize_shardings_by_axis_name(mesh, capsys):
    params = nx.shard({"w1": nx.zeros(nx.make_axes(embed=16, mlp=32)), "b": jnp.zeros((8, 4)), "name": "run"},
                      {"embed": "data", "mlp": "model"}, mesh)
    text = nxd.visualize_shardings({"params": params})
    assert text == ("params.b  (dim 0:8 -> unsharded, dim 1:4 -> unsharded)\n"
                    "params.w1  (embed:16 -> data, mlp:32 -> model)")
    assert capsys.readouterr().out == text + "\n"


def test_visualize_shardings_tuple_of_mesh_axes_and_single_device(mesh, capsys):
    x = nx.shard(nx.zeros(Batch), {"batch": ("data", "model")}, mesh)
    assert nxd.visualize_shardings({"x": x}) == "x  (batch:8 -> (data, model))"
    single = jax.device_put(nx.zeros(Embed), jax.devices()[0])
    assert nxd.visualize_shardings(single).startswith("(embed:4) on one device")


def test_visualize_shardings_inside_jit(capsys):
    jax.jit(lambda a: nxd.visualize_shardings({"a": a}) and None)(nx.zeros(Embed))
    assert capsys.readouterr().out == "a  (embed:4) traced: sharding not known here\n"


def test_visualize_named_sharding(mesh, capsys):
    s = NamedSharding(mesh, P(None, "model"))
    assert nxd.visualize_named_sharding((Batch, Embed), s) == "(batch:8 -> unsharded, embed:4 -> model)"
    nxd.visualize_named_sharding((Batch, Embed), s, grid=True)  # also draws the device grid
    assert "CPU" in capsys.readouterr().out
    with pytest.raises(ValueError, match="grid=True draws arrays of one or two axes; these have 3"):
        nxd.visualize_named_sharding((Batch, Embed, Mlp), s, grid=True)
    with pytest.raises(TypeError, match="axes must be Axis objects"):
        nxd.visualize_named_sharding(("batch",), s)


def test_describe_array():
    assert nxd.describe_array(nx.zeros((Batch, Embed), dtype=jnp.int8)) == \
        "NamedArray(axes=(Axis('batch', 8), Axis('embed', 4)), dtype=int8)"
    assert nxd.describe_array(jnp.zeros((2, 3))) == "Array(shape=(2, 3), dtype=float32)"


class Layer(eqx.Module):
    w: nx.NamedArray
    b: nx.NamedArray


class Model(eqx.Module):
    layers: list
    head: jax.Array
    table: jax.Array = eqx.field(static=True)


def test_diagnose_common_issues_finds_reused_and_static_arrays():
    shared = nx.zeros((Embed, Mlp))
    head = jnp.zeros(3)
    with pytest.warns(UserWarning):  # equinox warns too, at construction
        model = Model([Layer(shared, nx.zeros(Mlp)), Layer(shared, nx.zeros(Mlp))], head, jnp.ones(2))
    with pytest.raises(nxd.ModuleProblems, match=r"Reused array NamedArray\(axes=\(Axis\('embed', 4\), "
                                                 r"Axis\('mlp', 6\)\), dtype=float32\) at paths \['\.layers\[0\]\.w', "
                                                 r"'\.layers\[1\]\.w'\]\n  Static array at field \.table") as info:
        nxd.diagnose_common_issues(model)
    assert [paths for _, paths in info.value.reused_arrays] == [[".layers[0].w", ".layers[1].w"]]
    assert info.value.reused_arrays[0][0] is shared
    assert info.value.static_arrays == [".table"]


def test_diagnose_common_issues_passes_a_healthy_module():
    model = Model([Layer(nx.zeros((Embed, Mlp)), nx.zeros(Mlp))], jnp.zeros(3), 5)
    assert nxd.diagnose_common_issues(model) is None
    assert nxd.diagnose_common_issues({"a": jnp.zeros(2), "b": jnp.zeros(2), "n": 3}) is None


def test_module_problems_is_an_exception_that_pickles():
    p = nxd.ModuleProblems(static_arrays=[".t"])
    assert isinstance(p, Exception)
    assert str(pickle.loads(pickle.dumps(p))) == str(p)


def test_debug_is_exported():
    assert nx.debug is nxd
    for name in ("visualize_shardings", "visualize_named_sharding", "describe_array", "diagnose_common_issues",
                 "ModuleProblems"):
        assert hasattr(nx.debug, name)


def test_keyword_named_arrays_need_a_mapping(mesh, x):
    f = nx.shard_map(lambda a, *, b: a + b, mesh=mesh, in_specs=(P("data"),), out_specs=P("data"))
    with pytest.raises(ValueError, match=r"so the specs of the keyword arguments \['b'\] cannot be inferred"):
        f(x, b=x)
    out = nx.shard_map(lambda a, *, b: a + b, mesh=mesh, in_specs=(P("data"),), out_specs=P("data"),
                       axis_mapping={"batch": "data"})(x, b=x)
    np.testing.assert_allclose(out.array, x.array * 2)


def test_shard_map_inside_namedjit(mesh, x):
    """namedjit's sharding pass leaves shard_map bodies alone (their values are per-device
    blocks the user placed): named and plain shard_maps inside namedjit equal the unsharded result."""

    def named(x):
        return nx.shard_map(lambda b: b * 2 + nx.sum(b, "embed"), mesh=mesh)(x)

    with nx.axis_mapping({"batch": "data"}, mesh=mesh):
        got = nx.namedjit(named)(x)
    np.testing.assert_allclose(got.array, (x * 2 + nx.sum(x, "embed")).array, rtol=1e-6)

    def plain(a):
        return jax.shard_map(lambda b: b * 3, mesh=mesh, in_specs=P("data"), out_specs=P("data"))(a)

    got = nx.namedjit(plain, in_axes=((x.axis_names),), axis_resources={x.axis_names[0]: "data"}, mesh=mesh)(x.array)
    np.testing.assert_allclose(got, x.array * 3, rtol=1e-6)
