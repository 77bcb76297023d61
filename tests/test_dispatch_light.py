"""The light pytree path of NamedArray and namedjit's argument split (issue 17, must-have 4).

NamedArray is flattened and rebuilt on every jit/grad/tree_map call without ``__init__``:
these tests pin that the round trip keeps the axes under jit, nx.vmap and lax.scan, that a
malformed NamedArray is still rejected where it is made, and that the split of a call into
array leaves and static parts is unchanged. Timing lives in benchmarks/dispatch.py, not here.
"""

from __future__ import annotations

import pickle

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import namax as nx
from namax.arguments import Static, is_array, join_call, split_call
from namax.axis import Axis
from namax.named import NamedArray

Batch, Embed, Mlp, Time = nx.make_axes(batch=3, embed=4, mlp=5, time=6)


def rand(axes, seed=0):
    return nx.random.normal(jax.random.key(seed), axes)


class Layer(eqx.Module):
    w: NamedArray
    b: NamedArray
    act: str = eqx.field(static=True, default="tanh")


def assert_same_named(got, want, rtol=1e-6):
    assert type(got) is NamedArray
    assert got.axes == want.axes
    np.testing.assert_allclose(np.asarray(got.array), np.asarray(want.array), rtol=rtol, atol=1e-6)


# --- round trips through jax.tree_util ------------------------------------------------------


def test_flatten_unflatten_round_trip_keeps_axes_and_array():
    x = rand((Batch, Embed))
    leaves, treedef = jax.tree_util.tree_flatten({"x": x, "n": [x, None]})
    assert len(leaves) == 2 and all(leaf is x.array for leaf in leaves)
    back = jax.tree_util.tree_unflatten(treedef, leaves)
    assert back["x"].axes is x.axes and back["x"].array is x.array
    assert back["n"][0].axes == (Batch, Embed) and back["n"][1] is None
    # the pytree methods give the same as the registered functions
    children, axes = x.tree_flatten()
    assert children == (x.array,) and axes is x.axes
    again = NamedArray.tree_unflatten(axes, children)
    assert type(again) is NamedArray and again.axes is x.axes and again.array is x.array
    with pytest.raises(AttributeError, match="immutable"):
        again.axes = ()


def test_flatten_with_path_names_the_array_field():
    x = rand((Batch, Embed))
    [(path, leaf)], treedef = jax.tree_util.tree_flatten_with_path(x)
    assert path == (jax.tree_util.GetAttrKey("array"),) and leaf is x.array
    assert jax.tree_util.keystr(path) == ".array"
    assert jax.tree_util.tree_unflatten(treedef, [leaf]).axes == x.axes


def test_round_trip_under_jit_keeps_axes():
    x, w = rand((Batch, Embed), 1), rand((Embed, Mlp), 2)

    @jax.jit
    def f(tree):
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        inner = jax.tree_util.tree_unflatten(treedef, [leaf * 2 for leaf in leaves])
        assert inner["x"].axes == (Batch, Embed) and inner["w"].axes == (Embed, Mlp)
        return inner, nx.dot(inner["x"], inner["w"], axis=Embed)

    tree, y = f({"x": x, "w": w})
    assert_same_named(tree["x"], x * 2)
    assert_same_named(tree["w"], w * 2)
    assert y.axes == (Batch, Mlp)
    np.testing.assert_allclose(np.asarray(y.array), 4 * np.asarray(x.array) @ np.asarray(w.array), rtol=1e-5)
    tree2, _ = f({"x": x, "w": w})  # a cached call rebuilds the outputs the same way
    assert tree2["x"].axes == x.axes and tree2["w"].axes == w.axes


def test_round_trip_under_namedjit_and_grad_keeps_axes():
    layer = Layer(rand((Embed, Mlp), 3), rand((Mlp,), 4))
    x = rand((Batch, Embed), 5)

    def loss(layer, x):
        return nx.mean(nx.tanh(nx.dot(x, layer.w, axis=Embed) + layer.b) ** 2).array

    ref_value, ref_grads = jax.value_and_grad(loss)(layer, x)
    f = nx.namedjit(jax.value_and_grad(loss))
    for _ in range(2):  # the trace, then a cached call
        value, grads = f(layer, x)
        assert type(grads) is Layer and grads.act == "tanh"
        assert_same_named(grads.w, ref_grads.w)
        assert_same_named(grads.b, ref_grads.b)
        np.testing.assert_allclose(float(value), float(ref_value), rtol=1e-6)
    assert f.trace_count == 1


def test_round_trip_under_nx_vmap_keeps_axes():
    x, w = rand((Batch, Embed), 6), rand((Embed, Mlp), 7)

    def per_example(xi, w):
        assert xi.axes == (Embed,)
        leaves, treedef = jax.tree_util.tree_flatten((xi, w))
        xi2, w2 = jax.tree_util.tree_unflatten(treedef, leaves)
        assert xi2.axes == (Embed,) and w2.axes == (Embed, Mlp)
        return {"h": nx.dot(xi2, w2, axis=Embed), "x": xi2}

    out = nx.vmap(per_example, Batch)(x, w)
    assert out["h"].axes == (Batch, Mlp)
    assert_same_named(out["x"], x)
    np.testing.assert_allclose(np.asarray(out["h"].array), np.asarray(x.array) @ np.asarray(w.array), rtol=1e-5)
    jitted = jax.jit(nx.vmap(per_example, Batch))(x, w)
    assert jitted["h"].axes == (Batch, Mlp) and jitted["x"].axes == x.axes


def test_round_trip_through_lax_scan_carry_keeps_axes():
    h0, w = rand((Batch, Embed), 8), rand((Embed,), 9)
    xs = jnp.arange(Time.size, dtype=jnp.float32)

    def step(carry, t):
        h = carry["h"] * 0.5 + carry["w"] * t
        return {"h": h, "w": carry["w"]}, nx.sum(h).array

    carry, ys = jax.lax.scan(step, {"h": h0, "w": w}, xs)
    assert carry["h"].axes == (Batch, Embed) and carry["w"].axes == (Embed,)
    ref_h = np.asarray(h0.array)
    for t in range(Time.size):
        ref_h = ref_h * 0.5 + np.asarray(w.array) * t
    np.testing.assert_allclose(np.asarray(carry["h"].array), ref_h, rtol=1e-5)
    assert_same_named(carry["w"], w)
    assert ys.shape == (Time.size,)
    # the same under jit
    carry_jit, _ = jax.jit(lambda c: jax.lax.scan(step, c, xs))({"h": h0, "w": w})
    assert carry_jit["h"].axes == h0.axes and carry_jit["w"].axes == w.axes


def test_positional_transform_that_changes_the_rank_is_still_rejected_on_rebuild():
    x = rand((Batch, Embed), 10)
    with pytest.raises(ValueError, match=r"axes \(batch:3, embed:4\) was rebuilt around a value of shape \(4,\)"):
        jax.vmap(lambda v: v)(x)
    _, treedef = jax.tree_util.tree_flatten(x)
    with pytest.raises(ValueError, match="nx.vmap"):
        jax.tree_util.tree_unflatten(treedef, [jnp.zeros((3, 4, 1))])
    with pytest.raises(ValueError, match="nx.vmap"):
        NamedArray.tree_unflatten(x.axes, [jnp.zeros(4)])
    # placeholders and scalars are still accepted (tree utilities, optax's per-leaf reductions)
    for filler in (None, object(), jnp.float32(1.0), jax.ShapeDtypeStruct((3, 4), jnp.float32)):
        rebuilt = jax.tree_util.tree_unflatten(treedef, [filler])
        assert rebuilt.array is filler and rebuilt.axes is x.axes


# --- a malformed NamedArray is rejected where it is made ------------------------------------


@pytest.mark.parametrize("array, axes, error, match", [
    (np.zeros((3, 4)), (Batch,), ValueError, r"shape \(3, 4\) given 1 axes"),
    (np.zeros((3, 4)), (Batch, Mlp), ValueError, "axis 'mlp' has size 5 but the array's dimension is 4"),
    (np.zeros((3, 3)), (Batch, Batch), ValueError, "Duplicate axis name 'batch'"),
    (np.zeros((3, 4)), ("batch", "embed"), TypeError, "axes must be Axis objects"),
    (np.zeros(3), Batch.name, TypeError, "axes must be Axis objects"),
])
def test_malformed_named_array_is_rejected_at_creation(array, axes, error, match):
    with pytest.raises(error, match=match):
        NamedArray(array, axes)
    with pytest.raises(error, match=match):
        NamedArray(jnp.asarray(array), axes)


def test_malformed_named_array_is_rejected_at_creation_inside_jit():
    @jax.jit
    def f(a):
        return NamedArray(a, (Batch, Mlp))

    with pytest.raises(ValueError, match="axis 'mlp' has size 5"):
        f(jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match="mlp"):
        jax.jit(lambda a: nx.named(a, (Batch, Mlp)))(jnp.zeros((3, 4)))


def test_malformed_axes_are_rejected_where_the_axis_is_made():
    with pytest.raises(TypeError):
        Axis("", 3)
    with pytest.raises(ValueError):
        Axis("batch", -1)
    with pytest.raises(TypeError):
        Axis("batch", 2.5)
    assert Axis("batch", np.int64(3)) == Batch and hash(Axis("batch", np.int64(3))) == hash(Batch)
    assert pickle.loads(pickle.dumps((Batch, Embed))) == (Batch, Embed)


# --- namedjit's argument split -------------------------------------------------------------


def test_split_call_separates_arrays_from_static_leaves_for_every_leaf_kind():
    x = rand((Batch, Embed), 11)
    layer = Layer(rand((Embed, Mlp), 12), rand((Mlp,), 13), act="relu")
    args = (layer, x, np.ones(2), np.float32(2.0), 3.0, "s", [len, jnp.zeros(2)])
    key, dyn_args, dyn_kwargs = split_call(args, {"scale": 2, "v": jnp.ones(3)})
    assert [len(d) for d in dyn_args] == [2, 1, 1, 1, 0, 0, 1]
    assert [len(dyn_kwargs[k]) for k in ("scale", "v")] == [0, 1]
    assert key.masks[0] == (True, True) and key.masks[6] == (False, True)
    assert {s.value for s in key.statics if not callable(s.value)} == {3.0, "s", 2}
    back_args, back_kwargs = join_call(key, dyn_args, dyn_kwargs)
    assert back_args[0].act == "relu" and back_args[0].w.axes == (Embed, Mlp) and back_args[1].axes == x.axes
    assert back_args[4:6] == (3.0, "s") and back_args[6][0] is len and back_kwargs["scale"] == 2
    assert split_call(args, {"scale": 2, "v": jnp.ones(3)})[0] == key  # equal keys for equal calls
    assert split_call(args, {"scale": 3, "v": jnp.ones(3)})[0] != key  # a static leaf is in the key
    assert split_call(args[:1] + (rand((Batch, Mlp)),) + args[2:], {"scale": 2, "v": jnp.ones(3)})[0] != key


def test_is_array_after_arrays_were_seen_still_decides_by_value():
    for _ in range(2):  # the second round goes through the cache of known array types
        assert is_array(jnp.ones(2)) and is_array(np.ones(2)) and is_array(np.float32(1.0))
        assert not is_array(1.0) and not is_array("s") and not is_array(None) and not is_array(len)
        assert not is_array(jax.ShapeDtypeStruct((2,), jnp.float32))

    seen = []

    @jax.jit
    def f(a):
        key, dyn, _ = split_call((a, 2.0), {})
        seen.append(([len(d) for d in dyn], key.statics))
        return a

    f(jnp.ones(2))
    assert seen == [([1, 0], (Static(2.0),))]


def test_static_argnums_and_static_leaves_still_key_the_namedjit_cache():
    x = rand((Batch, Embed), 14)
    f = nx.namedjit(lambda x, scale, layer: nx.sum(x * scale + layer.b.array.sum()), static_argnums=1)
    layer = Layer(rand((Embed, Mlp), 15), rand((Mlp,), 16))
    a = f(x, 2.0, layer)
    b = f(x, 2.0, layer)
    c = f(x, 3.0, layer)
    d = f(x, 2.0, Layer(layer.w, layer.b, act="relu"))
    assert f.trace_count == 3
    assert float(a.array) == float(b.array) != float(c.array)
    assert float(d.array) == float(a.array)
