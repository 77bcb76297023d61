"""LoraWeight: dot_general for general dimension numbers, gradients, transformations, helpers."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import namax.quant as qax
from quant_cases import dot_with_roles, no_warnings
from namax.quant import LoraWeight


def _lora(key, shape, rank, alpha=1.0):
    k1, k2, k3 = jax.random.split(key, 3)
    *lead, n_in, n_out = shape
    return LoraWeight(jax.random.normal(k1, shape), jax.random.normal(k2, (*lead, n_in, rank)),
                      jax.random.normal(k3, (*lead, n_out, rank)), alpha=alpha)


def _reference(w):
    return w.w + (w.alpha / w.rank) * jnp.einsum("...ir,...or->...io", w.a, w.b)


@st.composite
def _dot_case(draw):
    stack = draw(st.integers(0, 1))
    sizes = [draw(st.integers(2, 3)) for _ in range(stack)] + [draw(st.integers(2, 5)), draw(st.integers(2, 5))]
    rank = draw(st.integers(1, min(sizes[-2:])))
    roles = [draw(st.sampled_from(["contract", "batch", "free"])) for _ in sizes]
    n_extra = draw(st.integers(0, 2))
    x_dims = [(k, sizes[k]) for k, r in enumerate(roles) if r != "free"] + [(None, 2 + i) for i in range(n_extra)]
    order = draw(st.permutations(range(len(x_dims))))
    x_dims = [x_dims[i] for i in order]
    on_left = draw(st.booleans())
    return sizes, rank, roles, x_dims, on_left, draw(st.integers(0, 2 ** 16))


@settings(max_examples=5)
@given(_dot_case())
def test_dot_general_matches_materialized(case):
    sizes, rank, roles, x_dims, on_left, seed = case
    key = jax.random.key(seed)
    w = _lora(key, tuple(sizes), rank, alpha=2.0)
    x = jax.random.normal(jax.random.fold_in(key, 1), tuple(s for _, s in x_dims))
    fn = dot_with_roles(roles, x_dims, on_left)
    got = no_warnings(jax.jit(qax.use_implicit_args(fn)), w, x)
    want = jax.jit(lambda w, x: fn(_reference(w), x))(w, x)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)


def test_fast_form_and_no_full_size_product():
    n_in, n_out, r = 64, 48, 4
    w = _lora(jax.random.key(0), (n_in, n_out), r)
    x = jnp.ones((8, n_in))
    f = qax.use_implicit_args(lambda w, x: x @ w)
    jaxpr = jax.make_jaxpr(f)(w, x).jaxpr
    dots = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
    assert len(dots) == 3
    for e in dots:
        (lc, _), (lb, _) = e.params["dimension_numbers"]
        assert lc == (e.invars[0].aval.ndim - 1,) and lb == ()  # activation is the LHS, contracting its last dim
        assert e.invars[0].aval.shape[0] == 8
    assert dots[2].params["dimension_numbers"][0][1] == (1,)  # b [out, r] contracted on its last dim
    assert not any(tuple(v.aval.shape) == (n_in, n_out) for e in jaxpr.eqns for v in e.outvars
                   if e.primitive.name != "stop_gradient")  # (w itself, frozen)
    # weight on the left (as in equinox's Linear: weight @ x): still x-as-LHS dots, no full product
    g = qax.use_implicit_args(lambda w, x: w.T @ x.T)
    jaxpr = jax.make_jaxpr(g)(w, jnp.ones((8, n_in))).jaxpr
    assert not any(tuple(v.aval.shape) in ((n_in, n_out), (n_out, n_in))
                   for e in jaxpr.eqns if e.primitive.name not in ("transpose", "stop_gradient") for v in e.outvars)


def test_compiled_temp_memory_is_not_a_merged_weight():
    n, r = 512, 4
    w = _lora(jax.random.key(0), (n, n), r)
    x = jnp.ones((4, n))
    factored = jax.jit(qax.use_implicit_args(lambda w, x: x @ w)).lower(w, x).compile()
    merged = jax.jit(lambda w, x: x @ w.materialize()).lower(w, x).compile()
    full = n * n * 4
    assert factored.memory_analysis().temp_size_in_bytes < full // 8
    assert merged.memory_analysis().temp_size_in_bytes >= full
    np.testing.assert_allclose(factored(w, x), merged(w, x), rtol=1e-4, atol=1e-3)


def test_gradients_wrt_factors_match_reference():
    w = _lora(jax.random.key(1), (5, 4), 2, alpha=3.0)
    x = jax.random.normal(jax.random.key(2), (3, 5))
    loss = qax.use_implicit_args(lambda w, x: jnp.sum(jnp.tanh(x @ w) ** 2))

    def ref(wd, a, b):
        return jnp.sum(jnp.tanh(x @ (wd + 1.5 * a @ b.T)) ** 2)

    w = LoraWeight(w.w, w.a, w.b, alpha=w.alpha, train_w=True)  # the explicit option: w's gradient too
    g = jax.jit(jax.grad(loss))(w, x)
    ga, gb, gw = jax.jit(jax.grad(ref, argnums=(1, 2, 0)))(w.w, w.a, w.b)
    assert isinstance(g, LoraWeight)
    for got, want in [(g.a, ga), (g.b, gb), (g.w, gw)]:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_transformations_jit_vmap_scan_cond_remat():
    key = jax.random.key(3)
    w = _lora(key, (4, 4), 2)
    dense = _reference(w)
    x = jax.random.normal(key, (2, 4))
    cases = {
        "jit": lambda w, x: jax.jit(lambda x: x @ w)(x),
        "vmap": lambda w, x: jax.vmap(lambda row: row @ w)(x),
        "cond": lambda w, x: lax.cond(x[0, 0] > 0, lambda x: x @ w, lambda x: -(x @ w), x),
        "remat": lambda w, x: jax.checkpoint(lambda x: jnp.sin(x @ w))(x),
        "while": lambda w, x: lax.while_loop(lambda c: c[1] < 2, lambda c: (jnp.tanh(c[0] @ w), c[1] + 1), (x, 0))[0],
    }
    for name, fn in cases.items():
        got = no_warnings(jax.jit(qax.use_implicit_args(fn)), w, x)
        np.testing.assert_allclose(got, fn(dense, x), rtol=1e-5, atol=1e-5, err_msg=name)
    g = jax.grad(lambda w: jnp.sum(qax.use_implicit_args(cases["remat"])(w, x)))(w)
    ref = jax.grad(lambda a: jnp.sum(jnp.sin(x @ (w.w + 0.5 * a @ w.b.T))))(w.a)
    np.testing.assert_allclose(g.a, ref, rtol=1e-5, atol=1e-6)


def test_scan_over_stacked_layers_stays_factored():
    key = jax.random.key(4)
    w = _lora(key, (3, 6, 6), 2)
    x = jax.random.normal(key, (2, 6))

    def model(ws, x):
        return lax.scan(lambda h, w: (jnp.tanh(h @ w), None), x, ws)[0]

    f = qax.use_implicit_args(model)
    np.testing.assert_allclose(no_warnings(jax.jit(f), w, x), jax.jit(model)(_reference(w), x), rtol=1e-5, atol=1e-5)
    body = jax.make_jaxpr(f)(w, x).jaxpr.eqns[0].params["jaxpr"].jaxpr
    assert [tuple(v.aval.shape) for v in body.invars] == [(2, 6), (6, 6), (6, 2), (6, 2)]
    g = jax.jit(jax.grad(lambda w: jnp.sum(f(w, x))))(w)
    ref = jax.jit(jax.grad(lambda b: jnp.sum(model(w.w + 0.5 * jnp.einsum("lir,lor->lio", w.a, b), x))))(w.b)
    np.testing.assert_allclose(g.b, ref, rtol=1e-4, atol=1e-5)


def test_transpose_and_other_uses():
    w = _lora(jax.random.key(5), (4, 3), 2)
    t = qax.use_implicit_args(lambda w: w.T)(w)
    assert isinstance(t, LoraWeight) and t.shape == (3, 4)
    np.testing.assert_allclose(t.materialize(), _reference(w).T, rtol=1e-5)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = qax.use_implicit_args(lambda w: jnp.sum(jnp.exp(w), axis=0))(w)
    assert "Primitive exp was not handled by class LoraWeight" in str(rec[0].message)
    np.testing.assert_allclose(out, jnp.sum(jnp.exp(_reference(w)), axis=0), rtol=1e-5)


def test_equinox_mlp_unchanged_without_warnings():
    key = jax.random.key(6)
    mlp = eqx.nn.MLP(5, 3, 16, 2, key=key)
    lora_mlp = qax.lora.wrap(mlp, rank=2, key=key)
    assert len(qax.lora.factors(lora_mlp)) == 3
    x = jax.random.normal(key, (4, 5))
    out = no_warnings(eqx.filter_jit(qax.use_implicit_args(lambda m, x: jax.vmap(m)(x))), lora_mlp, x)
    plain = eqx.filter_jit(lambda m, x: jax.vmap(m)(x))
    np.testing.assert_allclose(out, plain(mlp, x), rtol=1e-6, atol=1e-6)
    merged = qax.lora.merge(lora_mlp)
    np.testing.assert_allclose(plain(merged, x), out, rtol=1e-6, atol=1e-6)


def test_lora_finetune_lowers_loss_and_freezes_w():
    key = jax.random.key(7)
    mlp = eqx.nn.MLP(4, 2, 16, 2, key=key)
    params, static = eqx.partition(qax.lora.wrap(mlp, rank=2, key=key, alpha=2.0), eqx.is_array)
    xs = jax.random.normal(jax.random.key(8), (32, 4))
    ys = jnp.stack([jnp.sin(xs.sum(axis=1)), jnp.cos(xs[:, 0])], axis=1)
    opt = qax.lora.optimizer(optax.adam(3e-2))

    @qax.use_implicit_args
    def loss(p):
        return jnp.mean((jax.vmap(eqx.combine(p, static))(xs) - ys) ** 2)

    @jax.jit
    def step(m, state):
        value, grads = jax.value_and_grad(loss)(m)
        updates, state = opt.update(grads, state, m)
        return value, optax.apply_updates(m, updates), state

    state = opt.init(params)
    first = None
    for _ in range(30):
        value, params, state = step(params, state)
        first = float(value) if first is None else first
    assert float(loss(params)) < 0.5 * first
    for before, after in zip(qax.lora.factors(qax.lora.wrap(mlp, 2, key)), qax.lora.factors(params)):
        np.testing.assert_array_equal(before.w, after.w)
        assert float(jnp.max(jnp.abs(after.b))) > 0


def test_wrap_where_and_merge():
    params = {"dense": jnp.ones((4, 3)), "bias": jnp.ones(3), "emb": jnp.ones((5, 4)), "ids": jnp.ones((2, 2), int)}
    wrapped = qax.lora.wrap(params, 2, jax.random.key(0), where=lambda path, leaf: path[0].key == "dense")
    assert isinstance(wrapped["dense"], LoraWeight) and not isinstance(wrapped["emb"], LoraWeight)
    assert wrapped["dense"].a.shape == (4, 2) and wrapped["dense"].b.shape == (3, 2)
    np.testing.assert_array_equal(qax.lora.merge(wrapped)["dense"], params["dense"])  # b = 0
    all_wrapped = qax.lora.wrap(params, 2, jax.random.key(0))
    assert isinstance(all_wrapped["emb"], LoraWeight) and not isinstance(all_wrapped["ids"], LoraWeight)


def test_bad_inputs():
    w, a, b = jnp.ones((4, 3)), jnp.ones((4, 2)), jnp.ones((3, 2))
    with pytest.raises(ValueError, match="rank 5 does not fit a weight of shape"):
        LoraWeight(w, jnp.ones((4, 5)), jnp.ones((3, 5)))
    with pytest.raises(ValueError, match=r"LoraWeight.a must have shape \(4,\) \+ \(rank,\)"):
        LoraWeight(w, jnp.ones((3, 2)), b)
    with pytest.raises(ValueError, match=r"LoraWeight.b must have shape \(3,\) \+ \(rank,\)"):
        LoraWeight(w, a, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="a has rank 2 but b has rank 1"):
        LoraWeight(w, a, jnp.ones((3, 1)))
    with pytest.raises(TypeError, match="must share a dtype"):
        LoraWeight(w, a.astype(jnp.bfloat16), b)
    with pytest.raises(ValueError, match="at least 2 dims"):
        LoraWeight(jnp.ones(3), a, b)
    with pytest.raises(TypeError, match="LoraWeight.w must be an array"):
        LoraWeight([[1.0]], a, b)
    with pytest.raises(ValueError, match=r"rank 4 does not fit the weight at \['w'\] of shape \(4, 3\)"):
        qax.lora.wrap({"w": w}, 4, jax.random.key(0))
    with pytest.raises(ValueError, match="has no array fields"):
        qax.utils.freeze_keys(optax.sgd(1.0), LoraWeight, ["q"])



def _opt_setup():
    """Params with a LoRA weight, biases and a layernorm scale, and gradients nonzero everywhere."""
    params = {"dense": jax.random.normal(jax.random.key(9), (4, 3)), "bias": jnp.zeros(3),
              "norm": {"scale": jnp.ones(4)}, "layers": [{"bias": jnp.full(3, 0.5)}]}
    lora = qax.lora.wrap(params, rank=2, key=jax.random.key(10))
    # b != 0: a moves too; train_w: w gets a gradient, which the optimizer must still ignore
    lora["dense"] = LoraWeight(lora["dense"].w, lora["dense"].a, jnp.ones((3, 2)), alpha=2.0, train_w=True)
    x = jax.random.normal(jax.random.key(11), (5, 4))

    @qax.use_implicit_args
    def loss(p):
        h = x * p["norm"]["scale"]
        return jnp.sum(jnp.tanh(h @ p["dense"] + p["bias"] + p["layers"][0]["bias"]) ** 2)

    grads = jax.grad(loss)(lora)
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree_util.tree_leaves(grads))
    return lora, grads


def _step(opt, params, grads):
    state = opt.init(params)
    updates, state = jax.jit(opt.update)(grads, state, params)
    return optax.apply_updates(params, updates), state


def _moved(before, after):
    """Key path -> whether that leaf changed (frozen leaves must be bit-identical)."""
    flat = jax.tree_util.tree_flatten_with_path(before)[0]
    return {jax.tree_util.keystr(p): not np.array_equal(b, a)
            for (p, b), a in zip(flat, jax.tree_util.tree_leaves(after))}


FROZEN = {"['bias']": False, "['dense'].w": False, "['layers'][0]['bias']": False, "['norm']['scale']": False}


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_optimizer_trains_only_lora_factors(name):
    params, grads = _opt_setup()
    make = {"sgd": lambda: optax.sgd(0.1), "adam": lambda: optax.adam(0.1), "adamw": lambda: optax.adamw(0.1)}
    stepped, state = _step(qax.lora.optimizer(make[name]()), params, grads)
    assert _moved(params, stepped) == {**FROZEN, "['dense'].a": True, "['dense'].b": True}
    # optimizer state (adam's moments) only for a and b: frozen leaves carry none
    state_size = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(state) if np.ndim(x) > 0)
    n_factors = params["dense"].a.size + params["dense"].b.size
    assert state_size == (0 if name == "sgd" else 2 * n_factors)


def test_optimizer_trainable_names_and_predicates():
    params, grads = _opt_setup()
    lora = {"['dense'].a": True, "['dense'].b": True}
    cases = [
        (("bias",), {"['bias']": True, "['layers'][0]['bias']": True}),
        ("bias", {"['bias']": True, "['layers'][0]['bias']": True}),
        (["scale", "layers"], {"['norm']['scale']": True, "['layers'][0]['bias']": True}),
        (lambda path, leaf: jax.tree_util.keystr(path) == "['bias']", {"['bias']": True}),
        (lambda path, leaf: leaf.ndim == 1 and leaf.shape[0] == 4, {"['norm']['scale']": True}),
        (lambda path, leaf: True, {"['bias']": True, "['layers'][0]['bias']": True, "['norm']['scale']": True}),
        ((), {}),
    ]
    for trainable, trained in cases:
        stepped, _ = _step(qax.lora.optimizer(optax.sgd(0.1), trainable=trainable), params, grads)
        assert _moved(params, stepped) == {**FROZEN, **lora, **trained}, trainable  # w never trains
    stepped, _ = _step(qax.lora.optimizer(optax.sgd(0.1), trainable=("bias",)), params, grads)
    np.testing.assert_allclose(stepped["bias"], params["bias"] - 0.1 * grads["bias"], rtol=1e-6)


def test_optimizer_predicate_sees_key_paths():
    params, grads = _opt_setup()
    seen = set()

    def trainable(path, leaf):
        seen.add((jax.tree_util.keystr(path), tuple(leaf.shape)))
        return False

    _step(qax.lora.optimizer(optax.sgd(0.1), trainable=trainable), params, grads)
    assert seen == {("['bias']", (3,)), ("['layers'][0]['bias']", (3,)), ("['norm']['scale']", (4,))}


def test_optimizer_bad_arguments():
    params, grads = _opt_setup()
    with pytest.raises(TypeError, match=r"trainable must be a predicate \(path, leaf\) -> bool or a sequence"):
        qax.lora.optimizer(optax.sgd(0.1), trainable=3)
    with pytest.raises(TypeError, match="trainable must be"):
        qax.lora.optimizer(optax.sgd(0.1), trainable=[lambda p, l: True])
    with pytest.raises(ValueError, match="trainable contains an empty name"):
        qax.lora.optimizer(optax.sgd(0.1), trainable=("bias", ""))
    with pytest.raises(TypeError, match="opt must be an optax.GradientTransformation"):
        qax.lora.optimizer(optax.sgd)
    opt = qax.lora.optimizer(optax.sgd(0.1), trainable=lambda path, leaf: jnp.all(leaf > 0))
    with pytest.raises(TypeError, match=r"trainable\(path, leaf\) must return a Python bool, got .* at \['bias'\]"):
        opt.init(params)


def test_frozen_w_has_no_gradient_and_xla_drops_its_dot():
    """By default ``w`` is frozen: its gradient is zero, the a/b gradients equal the
    hand-written a/b-only ones, and the compiled step has no full-weight gradient dot."""
    n_in, n_out, r = 32, 24, 4
    w = _lora(jax.random.key(1), (n_in, n_out), r, alpha=3.0)
    x = jax.random.normal(jax.random.key(2), (6, n_in))
    loss = qax.use_implicit_args(lambda w, x: jnp.sum(jnp.tanh(x @ w) ** 2))

    def by_hand(a, b, wd):  # the a/b-only step one would write without namax
        return jnp.sum(jnp.tanh(x @ wd + (x @ a) @ b.T * (3.0 / r)) ** 2)

    g = jax.jit(jax.grad(loss))(w, x)
    ga, gb = jax.jit(jax.grad(by_hand, argnums=(0, 1)))(w.a, w.b, w.w)
    np.testing.assert_array_equal(g.w, np.zeros((n_in, n_out), np.float32))
    np.testing.assert_allclose(g.a, ga, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g.b, gb, rtol=1e-4, atol=1e-5)

    def dots(fn, *args):
        text = jax.jit(fn).lower(*args).compile().as_text()
        return sum(" dot(" in line for line in text.splitlines())

    frozen = dots(jax.grad(loss), w, x)
    hand = dots(jax.grad(by_hand, argnums=(0, 1)), w.a, w.b, w.w)
    trained = dots(jax.grad(loss), LoraWeight(w.w, w.a, w.b, alpha=3.0, train_w=True), x)
    assert frozen == hand < trained, (frozen, hand, trained)
