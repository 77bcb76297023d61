"""The one driver behind namedjit: one trace, implicit arguments as dense values, static
leaves anywhere, meshes with and without a context, source info, return types."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import namax as nx
import namax.quant as qax
from namax.quant import LoraWeight


def _lora(seed=0, shape=(16, 32), rank=4):
    k = jax.random.split(jax.random.key(seed), 3)
    w = jax.random.normal(k[0], shape) * 0.3
    *stack, n_in, n_out = shape
    return LoraWeight(w, jax.random.normal(k[1], (*stack, n_in, rank)) * 0.1,
                      jax.random.normal(k[2], (*stack, n_out, rank)) * 0.1, alpha=2.0)


def _spec(x) -> tuple:
    spec = tuple(x.sharding.spec)
    while spec and spec[-1] is None:
        spec = spec[:-1]
    return spec


# --- implicit arguments are dense inside the function -------------------------------------


def test_tree_map_over_lora_params_is_not_silently_wrong():
    x = jax.random.normal(jax.random.key(9), (8, 16))
    p = {"w": _lora()}

    def f(p, x):
        p = jax.tree_util.tree_map(lambda t: t * 2, p)  # the function sees dense weights
        return jnp.tanh(x @ p["w"])

    want = jnp.tanh(x @ (2 * p["w"].materialize()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a scaled LoRA weight stays factored
        got = nx.namedjit(f)(p, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, qax.use_implicit_args(f)(p, x), rtol=1e-5, atol=1e-5)


def test_vmap_over_a_lora_weight_and_dtype_cast_of_int4():
    w = _lora(1, shape=(4, 16, 8))  # stacked: vmap over the leading axis
    x = jax.random.normal(jax.random.key(2), (4, 3, 16))
    f = nx.namedjit(lambda w, x: jax.vmap(lambda wi, xi: xi @ wi)(w, x))
    np.testing.assert_allclose(f(w, x), jnp.einsum("lbi,lio->lbo", x, w.materialize()), rtol=1e-5, atol=1e-5)

    q = qax.int4.quantize({"w": jax.random.normal(jax.random.key(3), (32, 16))}, group_size=16)
    cast = nx.namedjit(lambda p, x: x.astype(jnp.bfloat16) @ jax.tree_util.tree_map(
        lambda t: t.astype(jnp.bfloat16), p)["w"])
    x = jax.random.normal(jax.random.key(4), (2, 32))
    want = x.astype(jnp.bfloat16) @ q["w"].materialize().astype(jnp.bfloat16)
    np.testing.assert_allclose(np.asarray(cast(q, x), np.float32), np.asarray(want, np.float32), rtol=2e-2, atol=2e-2)


def test_explicit_route_for_code_that_handles_implicit_values_itself():
    p, x = {"w": _lora(3)}, jax.random.normal(jax.random.key(5), (8, 16))
    loss = lambda p, x: jnp.mean(jnp.tanh(x @ p["w"]) ** 2)
    grads = nx.namedjit(jax.grad(qax.use_implicit_args(loss)), implicit="pytree")(p, x)
    assert isinstance(grads["w"], LoraWeight)
    lw = p["w"]
    dense = lambda a, b: jnp.mean(jnp.tanh(x @ (lw.w + lw.alpha / a.shape[1] * a @ b.T)) ** 2)
    ga, gb = jax.grad(dense, (0, 1))(lw.a, lw.b)
    np.testing.assert_allclose(grads["w"].a, ga, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads["w"].b, gb, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="implicit='bogus'"):
        nx.namedjit(loss, implicit="bogus")


def test_the_function_runs_once_per_signature():
    calls = []

    def f(p, x):
        calls.append(1)
        return x @ p["w"]

    g = nx.namedjit(f, in_axes=({"w": ("embed", "mlp")}, ("batch", "embed")))
    p, x = {"w": _lora(4)}, jnp.ones((8, 16))
    g(p, x)
    g(p, x)
    assert len(calls) == 1 and g.trace_count == 1


# --- static leaves anywhere ---------------------------------------------------------------


def test_equinox_mlp_with_a_function_field_gets_names_mapping_and_donation():
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    mlp = eqx.nn.MLP(16, 16, width_size=32, depth=2, activation=jax.nn.relu, key=jax.random.key(0))
    names = jax.tree_util.tree_map(lambda _: None, mlp)

    def f(model, x):
        return jax.vmap(model)(x) * 2

    x = jax.random.normal(jax.random.key(1), (8, 16))
    want = jax.vmap(mlp)(x) * 2
    g = nx.namedjit(f, in_axes=(names, ("batch", "embed")), axis_resources={"batch": "data"}, mesh=mesh,
                    donate_argnums=1)
    xd = jax.device_put(x, NamedSharding(mesh, P("data")))  # as the output: its buffer can be reused
    out = g(mlp, xd)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    assert _spec(out) == ("data",)  # the mapping was applied, not dropped
    assert xd.is_deleted()  # and the donation
    assert g.lower(mlp, x).as_text().count('named_axes = "batch') > 0
    r = nx.infer_names(f, mlp, x, in_axes=(names, ("batch", "embed")))
    assert r.out_names[0][0] == "batch"


def test_in_axes_naming_a_static_leaf_is_an_error_naming_its_path():
    mlp = eqx.nn.MLP(4, 2, width_size=8, depth=1, key=jax.random.key(0))
    names = jax.tree_util.tree_map(lambda _: None, mlp)
    names = eqx.tree_at(lambda m: m.activation, names, ("embed",), is_leaf=lambda x: x is None)
    f = nx.namedjit(lambda m, x: m(x), in_axes=(names, ("embed",)))
    with pytest.raises(ValueError, match=r"argument 0, leaf \d+ is custom_jvp.*not an array"):
        f(mlp, jnp.ones(4))


def test_static_outputs_and_python_numbers_come_back_as_returned():
    f = nx.namedjit(lambda x, scale, name: (x * scale, name, scale))
    out, name, scale = f(jnp.ones(3), 2.0, "relu")
    assert name == "relu" and scale == 2.0 and isinstance(scale, float)
    np.testing.assert_allclose(out, 2.0)
    compiled = f.lower(jnp.ones(3), 2.0, "relu").compile()
    assert compiled(jnp.ones(3), 2.0, "relu")[1] == "relu"


# --- meshes: Explicit and Auto, with and without a context, placed by shard or device_put -


def _fsdp_case():
    Batch, Embed, Mlp = nx.make_axes(batch=8, embed=16, mlp=32)
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = {"norm": nx.ones(Embed) * 1.5, "w1": nx.random.normal(k1, (Embed, Mlp)) * 0.1,
              "w2": nx.random.normal(k2, (Mlp, Embed)) * 0.1}
    x = nx.random.normal(k3, (Batch, Embed))

    def loss_fn(p, x):
        h = nx.dot(x * p["norm"], p["w1"], axis=Embed)
        return nx.mean(nx.dot(nx.tanh(h), p["w2"], axis=Mlp) ** 2).array

    def step(p, x):
        loss, g = jax.value_and_grad(loss_fn)(p, x)
        return loss, jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, p, g)

    return step, params, x


@pytest.mark.parametrize("axis_type", ["explicit", "auto"])
@pytest.mark.parametrize("placed", ["shard", "device_put", "unplaced"])
@pytest.mark.parametrize("context", [False, True])
def test_fsdp_on_every_kind_of_mesh(axis_type, placed, context):
    types = (AxisType.Explicit if axis_type == "explicit" else AxisType.Auto,) * 2
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=types)
    step, params, x = _fsdp_case()
    want_loss, want = jax.jit(step)(params, x)
    if placed == "shard":
        params = nx.shard(params, {"embed": "data"}, mesh)
    elif placed == "device_put":
        params = {k: nx.NamedArray(jax.device_put(v.array, NamedSharding(mesh, P())), v.axes)
                  for k, v in params.items()}
        x = nx.NamedArray(jax.device_put(x.array, NamedSharding(mesh, P("data"))), x.axes)
    f = nx.fsdp(step, {"embed": "data"}, {"batch": "data"}, mesh=mesh)
    if context:
        with jax.set_mesh(mesh):
            loss, got = f(params, x)
    else:
        loss, got = f(params, x)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    for k in want:
        np.testing.assert_allclose(got[k].array, want[k].array, rtol=1e-5, atol=1e-6)
    assert _spec(got["w1"].array) == ("data",) and _spec(got["w2"].array) == (None, "data")


# --- source info ------------------------------------------------------------------------


def test_named_scopes_and_user_lines_survive_the_passes():
    def f(x, w):
        with jax.named_scope("my_block"):
            return jnp.tanh(x @ w)

    g = nx.namedjit(f, in_axes=(("batch", "embed"), ("embed", "mlp")))
    text = g.lower(jnp.ones((2, 3)), jnp.ones((3, 4))).as_text(debug_info=True)
    assert "my_block" in text and "test_driver.py" in text
    # every equation of the traced program points at the user's file, not at namax
    jaxpr = g.trace(jnp.ones((2, 3)), jnp.ones((3, 4))).jaxpr
    from jax.extend.source_info_util import summarize

    inner = jaxpr.eqns[0].params["jaxpr"].jaxpr if jaxpr.eqns[0].primitive.name == "jit" else jaxpr.jaxpr
    places = [summarize(e.source_info) for e in inner.eqns if e.primitive.name in ("dot_general", "tanh")]
    assert places and all("test_driver.py" in p for p in places), places


def test_names_pass_errors_cite_the_user_line():
    def f(x):
        return x + x.T  # batch meets embed

    g = nx.namedjit(f, in_axes=(("batch", "embed"),))
    with pytest.raises(nx.passes.AxisNameConflictError, match="test_driver.py"):
        g(jnp.ones((4, 4)))


# --- what comes back -----------------------------------------------------------------------


def test_plain_code_gets_plain_arrays_unless_asked():
    names = (("batch", "embed"), ("embed", "mlp"))
    x, w = jnp.ones((2, 3)), jnp.ones((3, 4))
    out = nx.namedjit(lambda x, w: x @ w, in_axes=names)(x, w)
    assert type(out) is type(x)
    np.asarray(out)  # a caller's code keeps working
    named = nx.namedjit(lambda x, w: x @ w, in_axes=names, out_axes="infer")(x, w)
    assert named.axis_names == ("batch", "mlp")
    with pytest.raises(ValueError, match="out_axes='all'"):
        nx.namedjit(lambda x: x, out_axes="all")


def test_a_mapping_without_a_mesh_is_an_error_not_ignored():
    f = nx.namedjit(lambda x: x * 2, axis_resources={"batch": "data"})
    with pytest.raises(ValueError, match="axis_resources given but there is no mesh"):
        f(nx.ones(nx.Axis("batch", 4)))
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    with jax.set_mesh(mesh):  # a mesh from the context is enough
        assert _spec(f(nx.ones(nx.Axis("batch", 4))).array) == ("data",)


# --- the sharding contract for inputs and outputs ----------------------------------------


def test_inputs_and_outputs_that_cannot_be_placed_are_errors_naming_them():
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    f = nx.namedjit(lambda x: x * 2, axis_resources={"a": "data"}, mesh=mesh)
    with pytest.raises(nx.ShardingError, match=r"axis 'a' of size 2 does not divide.*input args\[0\]"):
        f(nx.ones(nx.Axis("a", 2)))
    g = nx.namedjit(lambda x: x * 2, axis_resources={"a": "model", "b": "model"}, mesh=mesh)
    with pytest.raises(nx.ShardingError, match="mesh axis 'model' is used twice"):
        g(nx.ones((nx.Axis("a", 4), nx.Axis("b", 4))))
    # an inferred intermediate that does not divide stays replicated instead
    h = nx.namedjit(lambda x: nx.sum(x.rename({"a": "c"})[{"c": slice(0, 2)}] * 2),
                    axis_resources={"a": "data", "c": "data"}, mesh=mesh)
    assert float(h(nx.ones(nx.Axis("a", 4))).array) == 4.0


def test_mappings_keyed_by_axis_objects_and_a_name_used_twice():
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    Batch = nx.Axis("batch", 8)
    f = nx.namedjit(lambda x: x * 2, axis_resources={Batch: "data"}, mesh=mesh)
    assert _spec(f(nx.ones((Batch, nx.Axis("e", 3)))).array) == ("data",)
    with pytest.raises(TypeError, match="axis mapping keys are axis names"):
        nx.namedjit(lambda x: x, axis_resources={0: "data"}, mesh=mesh)(nx.ones(Batch))
    # one name on two dims (a square (embed, embed) weight) is a statement the names pass
    # uses; placing such an input by a mapping is the error: one mesh axis used twice
    with pytest.raises(nx.ShardingError, match="mesh axis 'data' is used twice"):
        nx.namedjit(lambda x: x * 2, in_axes=(("batch", "batch"),), axis_resources={"batch": "data"},
                    mesh=mesh)(jnp.ones((8, 8)))
