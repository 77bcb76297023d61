"""LoraWeight lookups (gather, dynamic_slice): embedding tables stay factored, values and gradients."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

import namax.quant as qax
from namax.quant import LoraWeight
from quant_cases import strict as _strict


def _lora(key, shape, rank, alpha=3.0, dtype=jnp.float32):
    k1, k2, k3 = jax.random.split(key, 3)
    *lead, n_in, n_out = shape
    return LoraWeight(jax.random.normal(k1, shape, dtype), jax.random.normal(k2, (*lead, n_in, rank), dtype),
                      jax.random.normal(k3, (*lead, n_out, rank), dtype), alpha=alpha)


def _merged_np(w):
    """``w + (alpha / r) a b^T`` in float64 numpy."""
    a, b = np.asarray(w.a, np.float64), np.asarray(w.b, np.float64)
    return np.asarray(w.w, np.float64) + w.alpha / w.rank * np.einsum("...ir,...or->...io", a, b)


def _merged(w, a, b, alpha=3.0):
    """The same in jnp, differentiable in ``w``, ``a`` and ``b``."""
    return w + alpha / a.shape[-1] * jnp.einsum("...ir,...or->...io", a, b)


def _ids(key, shape, n):
    return jax.random.randint(key, shape, 0, n)


# (name, weight shape, lookup(table, ids), ids shape, id range: the dim the ids index)
LOOKUPS = [
    ("rows, 1-d ids", (9, 6), lambda t, i: t[i], (4,), 9),
    ("rows, 2-d ids", (9, 6), lambda t, i: t[i], (2, 3), 9),
    ("rows, 3-d ids", (9, 6), lambda t, i: t[i], (2, 1, 3), 9),
    ("take axis 0", (9, 6), lambda t, i: jnp.take(t, i, axis=0), (3, 2), 9),
    ("take axis 0, clip", (9, 6), lambda t, i: jnp.take(t, i * 3 - 4, axis=0, mode="clip"), (5,), 9),
    ("take axis 1 (columns)", (9, 6), lambda t, i: jnp.take(t, i, axis=1), (2, 3), 6),
    ("columns by indexing", (9, 6), lambda t, i: t[:, i], (4,), 6),
    ("single entries", (9, 6), lambda t, i: t[i, i % 6], (2, 3), 9),
    ("rows and a fixed column", (9, 6), lambda t, i: t[i, 2], (5,), 9),
    ("vmapped lookup", (9, 6), lambda t, i: jax.vmap(lambda r: t[r])(i), (3, 2), 9),
    ("negative ids", (9, 6), lambda t, i: t[-1 - i], (4,), 9),
    ("stacked, fixed layer", (3, 7, 5), lambda t, i: t[1, i], (2, 3), 7),
    ("stacked, rows of every layer", (3, 7, 5), lambda t, i: t[:, i], (4,), 7),
    ("stacked, take layers", (3, 7, 5), lambda t, i: jnp.take(t, i, axis=0), (2,), 3),
    ("stacked, vmapped per layer", (3, 7, 5), lambda t, i: jax.vmap(lambda l, r: l[r])(t, i), (3, 4), 7),
    ("row blocks (slice size 2)", (9, 6), lambda t, i: lax.gather(
        t, i[:, None], lax.GatherDimensionNumbers(offset_dims=(1, 2), collapsed_slice_dims=(), start_index_map=(0,)),
        (2, 6)), (4,), 8),
    ("partial blocks", (9, 6), lambda t, i: lax.gather(
        t, jnp.stack([i, i % 4], -1),
        lax.GatherDimensionNumbers(offset_dims=(1, 2), collapsed_slice_dims=(), start_index_map=(0, 1)),
        (2, 3)), (4,), 8),
    ("scalar id (dynamic_slice)", (9, 6), lambda t, i: t[i[0]], (1,), 9),
    ("scalar column (dynamic_slice)", (9, 6), lambda t, i: t[:, i[0]], (1,), 6),
    ("dynamic block", (9, 6), lambda t, i: lax.dynamic_slice(t, (i[0], i[0]), (3, 2)), (1,), 9),
]


@pytest.mark.parametrize("name, shape, lookup, ids_shape, n", LOOKUPS, ids=[c[0] for c in LOOKUPS])
def test_lookup_matches_merged_weight_without_materializing(name, shape, lookup, ids_shape, n):
    key = jax.random.key(len(name))
    w = _lora(key, shape, rank=2)
    ids = _ids(jax.random.fold_in(key, 1), ids_shape, n)
    got = _strict(jax.jit(qax.use_implicit_args(lookup)), w, ids)
    want = lookup(jnp.asarray(_merged_np(w), jnp.float32), ids)  # plain JAX on the merged weight
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, shape, lookup, ids_shape, n", LOOKUPS, ids=[c[0] for c in LOOKUPS])
def test_lookup_gradients_match_merged_formula(name, shape, lookup, ids_shape, n):
    key = jax.random.key(len(name) + 100)
    w = _lora(key, shape, rank=2)
    ids = _ids(jax.random.fold_in(key, 1), ids_shape, n)
    probe = jax.random.normal(jax.random.fold_in(key, 2), jax.eval_shape(lookup, w.w, ids).shape)

    def loss(wd, a, b):
        out = qax.use_implicit_args(lookup)(LoraWeight(wd, a, b, alpha=3.0, train_w=True), ids)
        return jnp.sum(jnp.sin(out) * probe)

    def ref(wd, a, b):
        return jnp.sum(jnp.sin(lookup(_merged(wd, a, b), ids)) * probe)

    got = _strict(jax.jit(jax.grad(loss, argnums=(0, 1, 2))), w.w, w.a, w.b)
    want = jax.jit(jax.grad(ref, argnums=(0, 1, 2)))(w.w, w.a, w.b)
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in want[1:])
    for part, g, r in zip("wab", got, want):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5, err_msg=part)


def test_embedding_lookup_forms_no_full_size_product():
    vocab, dim, r = 1000, 64, 4
    t = _lora(jax.random.key(0), (vocab, dim), r)
    ids = jnp.zeros((8, 16), jnp.int32)

    def eqns(jaxpr):
        for e in jaxpr.eqns:
            yield e
            for v in e.params.values():
                for sub in v if isinstance(v, (tuple, list)) else [v]:
                    if isinstance(sub, (jax.extend.core.Jaxpr, jax.extend.core.ClosedJaxpr)):
                        yield from eqns(getattr(sub, "jaxpr", sub))

    for lookup in (lambda t, i: t[i], lambda t, i: jnp.take(t, i, axis=0), lambda t, i: t[i[0, 0]]):
        found = list(eqns(jax.make_jaxpr(qax.use_implicit_args(lookup))(t, ids).jaxpr))
        assert (vocab, dim) not in {tuple(v.aval.shape) for e in found for v in e.outvars
                                     if e.primitive.name != "stop_gradient"}  # (w itself, frozen)
        dots = [e for e in found if e.primitive.name == "dot_general"]
        assert len(dots) == 1 and dots[0].invars[1].aval.shape == (dim, r)  # (rows of a) b^T only


def test_lookup_out_of_bounds_fill_and_nan():
    t = _lora(jax.random.key(1), (6, 4), 2)
    ids = jnp.array([0, 7, -9, 5])
    merged = _merged_np(t)
    fill = qax.use_implicit_args(lambda t, i: jnp.take(t, i, axis=0, mode="fill", fill_value=-7.0))
    got = np.asarray(_strict(fill, t, ids))
    np.testing.assert_array_equal(got[1:3], np.full((2, 4), -7.0, np.float32))  # bit-exact: nothing added
    np.testing.assert_allclose(got[[0, 3]], merged[[0, 5]], rtol=1e-5, atol=1e-5)
    got = np.asarray(_strict(qax.use_implicit_args(lambda t, i: jnp.take(t, i, axis=0)), t, ids))
    assert np.isnan(got[1:3]).all() and not np.isnan(got[[0, 3]]).any()
    got = np.asarray(_strict(qax.use_implicit_args(lambda t, i: t.at[i].get(mode="fill", fill_value=0.5)), t, ids))
    np.testing.assert_array_equal(got[1:3], np.full((2, 4), 0.5, np.float32))


def test_bfloat16_table_keeps_dtype():
    t = _lora(jax.random.key(2), (10, 8), 2, dtype=jnp.bfloat16)
    ids = jnp.array([[3, 9], [0, 3]])
    got = _strict(qax.use_implicit_args(lambda t, i: t[i]), t, ids)
    assert got.dtype == jnp.bfloat16 and got.shape == (2, 2, 8)
    np.testing.assert_allclose(np.asarray(got, np.float32), _merged_np(t)[np.asarray(ids)], rtol=3e-2, atol=5e-2)


def test_stacked_weight_scalar_layer_stays_factored():
    ws = _lora(jax.random.key(3), (3, 6, 5), 2)
    one = qax.use_implicit_args(lambda ws, i: ws[i])(ws, jnp.array(2))
    assert isinstance(one, LoraWeight) and one.shape == (6, 5)
    np.testing.assert_allclose(_merged_np(one), _merged_np(ws)[2], rtol=1e-5, atol=1e-5)
    x = jax.random.normal(jax.random.key(4), (4, 6))
    f = qax.use_implicit_args(lambda ws, i, x: x @ ws[i])
    np.testing.assert_allclose(_strict(jax.jit(f), ws, jnp.array(1), x), np.asarray(x) @ _merged_np(ws)[1],
                               rtol=1e-4, atol=1e-4)
    row = _lora(jax.random.key(5), (1, 5), 1)
    with pytest.warns(UserWarning, match="Primitive squeeze was not handled by class LoraWeight"):
        out = qax.use_implicit_args(lambda w: jnp.squeeze(w, axis=0))(row)  # drops the in dim: dense
    np.testing.assert_allclose(out, _merged_np(row)[0], rtol=1e-5, atol=1e-5)


def test_wrapped_embedding_model_trains_through_lookup():
    """``lora.wrap`` wraps the embedding table too; a model using ``table[ids]`` runs factored."""
    key = jax.random.key(5)
    vocab, dim, n_cls = 20, 8, 3
    params = {"embed": jax.random.normal(key, (vocab, dim)),
              "head": jax.random.normal(jax.random.fold_in(key, 1), (dim, n_cls)), "bias": jnp.zeros(n_cls)}
    lora = qax.lora.wrap(params, rank=2, key=jax.random.key(6), alpha=4.0)
    assert isinstance(lora["embed"], LoraWeight) and isinstance(lora["head"], LoraWeight)
    ids = jax.random.randint(jax.random.key(7), (4, 5), 0, vocab - 3)  # the last rows are never looked up
    labels = jax.random.randint(jax.random.key(8), (4,), 0, n_cls)

    def model_loss(p, ids):
        h = jnp.mean(p["embed"][ids], axis=1)
        logits = jnp.tanh(h) @ p["head"] + p["bias"]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))

    loss = qax.use_implicit_args(model_loss)
    np.testing.assert_allclose(_strict(jax.jit(loss), lora, ids), model_loss(params, ids), rtol=1e-6)  # b = 0

    emb = lora["embed"]
    lora["embed"] = LoraWeight(emb.w, emb.a, jax.random.normal(jax.random.key(9), emb.b.shape), alpha=emb.alpha)
    np.testing.assert_allclose(_strict(jax.jit(loss), lora, ids), model_loss(qax.lora.merge(lora), ids), rtol=1e-5)
    grads = _strict(jax.jit(jax.grad(loss)), lora, ids)

    def merged_loss(ea, eb):
        p = dict(qax.lora.merge(lora), embed=_merged(params["embed"], ea, eb, alpha=4.0))
        return model_loss(p, ids)

    ga, gb = jax.grad(merged_loss, argnums=(0, 1))(lora["embed"].a, lora["embed"].b)
    np.testing.assert_allclose(grads["embed"].a, ga, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads["embed"].b, gb, rtol=1e-4, atol=1e-6)
    assert float(jnp.max(jnp.abs(ga))) > 0 and float(jnp.max(jnp.abs(gb))) > 0
    assert not np.asarray(grads["embed"].a)[vocab - 3:].any()  # rows never looked up get no gradient

    opt = qax.lora.optimizer(optax.sgd(0.05))
    updates, _ = opt.update(grads, opt.init(lora), lora)
    stepped = optax.apply_updates(lora, updates)
    assert float(_strict(jax.jit(loss), stepped, ids)) < float(loss(lora, ids))
    np.testing.assert_array_equal(stepped["embed"].w, params["embed"])
    np.testing.assert_array_equal(stepped["bias"], params["bias"])
    assert not np.array_equal(stepped["embed"].a, lora["embed"].a)
