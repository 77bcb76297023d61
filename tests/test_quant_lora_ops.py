"""LoraWeight under plain jnp ops on weights: scalar mul/div/neg, float casts, reduce_sum.

Each op keeps the weight factored (no ``a b^T`` of the full weight's shape), matches the
op applied to the merged weight, and differentiates like the merged formula.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.extend.core import primitives as prims

import namax as nx
import namax.quant as qax
from namax.quant import LoraWeight
from namax.quant.handlers import dispatch
from quant_cases import strict as _strict, all_eqns as _eqns

ALPHA = 3.0


def _lora(key, shape, rank, alpha=ALPHA, dtype=jnp.float32, train_w=False):
    k1, k2, k3 = jax.random.split(key, 3)
    *lead, n_in, n_out = shape
    return LoraWeight(jax.random.normal(k1, shape, dtype), jax.random.normal(k2, (*lead, n_in, rank), dtype),
                      jax.random.normal(k3, (*lead, n_out, rank), dtype), alpha=alpha, train_w=train_w)


def _merged(w, a, b, alpha=ALPHA):
    """``w + (alpha / r) a b^T`` in jnp, differentiable in ``w``, ``a`` and ``b``."""
    return w + alpha / a.shape[-1] * jnp.einsum("...ir,...or->...io", a, b)


def _merged_np(t):
    a, b = np.asarray(t.a, np.float64), np.asarray(t.b, np.float64)
    return np.asarray(t.w, np.float64) + t.alpha / t.rank * np.einsum("...ir,...or->...io", a, b)


def _full_products(fn, *args, n_in, n_out):
    """The dot_generals in ``fn``'s implicit jaxpr whose output holds an ``in x out`` block:
    an ``a b^T`` (or a materialized weight) of the full size."""
    jaxpr = jax.make_jaxpr(qax.use_implicit_args(fn))(*args).jaxpr
    return [e for e in _eqns(jaxpr) if e.primitive.name == "dot_general"
            and any({n_in, n_out} <= set(v.aval.shape) for v in e.outvars)]


# -- scalar mul / div / neg --------------------------------------------------------------

# (name, op(t, c) with c a float32 scalar argument)
SCALAR_OPS = [
    ("t * 2", lambda t, c: t * 2),
    ("2.5 * t", lambda t, c: 2.5 * t),
    ("t * c", lambda t, c: t * c),
    ("c * t", lambda t, c: c * t),
    ("t / 3", lambda t, c: t / 3),
    ("t / c", lambda t, c: t / c),
    ("-t", lambda t, c: -t),
    ("-(t * c) / 2", lambda t, c: -(t * c) / 2),
    ("t * size-1 array", lambda t, c: t * jnp.reshape(c, (1, 1))),
    ("t * jnp.float32 literal", lambda t, c: t * jnp.float32(0.75)),
]
SHAPES = [(8, 6), (3, 8, 6)]


@pytest.mark.parametrize("shape", SHAPES, ids=["2d", "stacked"])
@pytest.mark.parametrize("name, op", SCALAR_OPS, ids=[o[0] for o in SCALAR_OPS])
def test_scalar_op_stays_factored_and_matches_merged(name, op, shape):
    key = jax.random.key(len(name) + len(shape))
    t = _lora(key, shape, rank=2)
    c = jax.random.uniform(jax.random.fold_in(key, 1), (), minval=0.5, maxval=2.0)
    got = _strict(jax.jit(qax.use_implicit_args(op)), t, c)
    assert isinstance(got, LoraWeight) and got.shape == t.shape and got.dtype == t.dtype
    assert got.alpha == t.alpha and got.rank == t.rank
    want = op(jnp.asarray(_merged_np(t), jnp.float32), c)
    np.testing.assert_allclose(got.materialize(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, op", SCALAR_OPS, ids=[o[0] for o in SCALAR_OPS])
def test_scalar_op_gradients_match_merged_formula(name, op):
    key = jax.random.key(len(name) + 50)
    t = _lora(key, (5, 4), rank=2, train_w=True)  # the full formula, w's gradient included
    c = jnp.float32(1.7)
    x = jax.random.normal(jax.random.fold_in(key, 1), (3, 5))
    probe = jax.random.normal(jax.random.fold_in(key, 2), (3, 4))
    loss = qax.use_implicit_args(lambda t, c: jnp.sum(jnp.sin(x @ op(t, c)) * probe))

    def ref(wd, a, b, c):
        return jnp.sum(jnp.sin(x @ op(_merged(wd, a, b), c)) * probe)

    g, gc = _strict(jax.jit(jax.grad(loss, argnums=(0, 1))), t, c)
    want = jax.jit(jax.grad(ref, argnums=(0, 1, 2, 3)))(t.w, t.a, t.b, c)
    assert isinstance(g, LoraWeight)
    assert float(jnp.max(jnp.abs(want[1]))) > 0 and float(jnp.max(jnp.abs(want[2]))) > 0
    for part, got, r in zip("wab", (g.w, g.a, g.b), want):
        np.testing.assert_allclose(got, r, rtol=1e-4, atol=1e-5, err_msg=part)
    np.testing.assert_allclose(gc, want[3], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, op", SCALAR_OPS, ids=[o[0] for o in SCALAR_OPS])
def test_dot_after_scalar_op_forms_no_full_size_product(name, op):
    n_in, n_out = 64, 48
    t = _lora(jax.random.key(0), (n_in, n_out), rank=4)
    x = jnp.ones((8, n_in))
    f = lambda t, x: x @ op(t, jnp.float32(2.0))  # noqa: E731
    assert _strict(_full_products, f, t, x, n_in=n_in, n_out=n_out) == []
    merging = lambda w, a, b, x: x @ _merged(w, a, b)  # noqa: E731
    assert _full_products(merging, t.w, t.a, t.b, x, n_in=n_in, n_out=n_out)  # the check does see one
    np.testing.assert_allclose(_strict(jax.jit(qax.use_implicit_args(f)), t, x),
                               f(jnp.asarray(_merged_np(t), jnp.float32), x), rtol=1e-4, atol=1e-3)


# operands that are not one value, and a weight in the denominator: materialized, values right
MATERIALIZED_OPS = [
    ("mul", "t * row", lambda t: t * jnp.arange(1.0, 7.0)),
    ("mul", "t * column", lambda t: t * jnp.arange(1.0, 9.0)[:, None]),
    ("mul", "t * full array", lambda t: t * jnp.full((8, 6), 2.0)),
    ("div", "c / t", lambda t: 2.0 / t),
    ("mul", "t * t", lambda t: t * t),
]


@pytest.mark.parametrize("prim, name, op", MATERIALIZED_OPS, ids=[o[1] for o in MATERIALIZED_OPS])
def test_other_operands_materialize_with_a_warning(prim, name, op):
    t = _lora(jax.random.key(1), (8, 6), rank=2)
    with pytest.warns(UserWarning, match=f"Primitive {prim} was not handled by class LoraWeight"):
        got = qax.use_implicit_args(op)(t)
    np.testing.assert_allclose(got, op(jnp.asarray(_merged_np(t), jnp.float32)), rtol=1e-5, atol=1e-5)


# -- dtype casts --------------------------------------------------------------------------

def test_bf16_cast_casts_every_part_and_dots_stay_factored():
    n_in, n_out = 64, 48
    t = _lora(jax.random.key(2), (n_in, n_out), rank=4)
    x = jax.random.normal(jax.random.key(3), (8, n_in))
    cast = _strict(qax.use_implicit_args(lambda t: t.astype(jnp.bfloat16)), t)
    assert isinstance(cast, LoraWeight) and cast.alpha == t.alpha and cast.dtype == jnp.bfloat16
    for part in (cast.w, cast.a, cast.b):
        assert part.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(cast.a, np.float32), np.asarray(t.a.astype(jnp.bfloat16), np.float32))
    merged = jnp.asarray(_merged_np(t), jnp.float32)
    np.testing.assert_allclose(np.asarray(cast.materialize(), np.float32), merged, rtol=2e-2, atol=5e-2)

    cases = {
        "bf16 @ bf16": lambda t, x: x.astype(jnp.bfloat16) @ t.astype(jnp.bfloat16),
        "bf16 dot, f32 result": lambda t, x: jnp.matmul(x.astype(jnp.bfloat16), t.astype(jnp.bfloat16),
                                                         preferred_element_type=jnp.float32),
        "f32 @ bf16 weight": lambda t, x: x @ t.astype(jnp.bfloat16),
        "bf16 then back to f32": lambda t, x: x @ t.astype(jnp.bfloat16).astype(jnp.float32),
    }
    for name, f in cases.items():
        assert _strict(_full_products, f, t, x, n_in=n_in, n_out=n_out) == [], name
        got = _strict(jax.jit(qax.use_implicit_args(f)), t, x)
        want = f(merged, x)
        assert got.dtype == want.dtype, name
        scale = float(jnp.max(jnp.abs(want.astype(jnp.float32))))
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=0,
                                   atol=2e-2 * scale, err_msg=name)


def test_cast_gradients_match_cast_merged_formula():
    t = _lora(jax.random.key(4), (6, 5), rank=2, train_w=True)
    x = jax.random.normal(jax.random.key(5), (3, 6))
    probe = jax.random.normal(jax.random.key(6), (3, 5))
    fn = lambda t: jnp.sum(jnp.sin(x @ t.astype(jnp.bfloat16).astype(jnp.float32)) * probe)  # noqa: E731

    def ref(wd, a, b):  # the cast model's formula: every part rounded to bf16
        bf = lambda v: v.astype(jnp.bfloat16).astype(jnp.float32)  # noqa: E731
        return jnp.sum(jnp.sin(x @ _merged(bf(wd), bf(a), bf(b))) * probe)

    g = _strict(jax.jit(jax.grad(qax.use_implicit_args(fn))), t)
    want = jax.jit(jax.grad(ref, argnums=(0, 1, 2)))(t.w, t.a, t.b)
    for part, got, r in zip("wab", (g.w, g.a, g.b), want):
        assert float(jnp.max(jnp.abs(r))) > 0
        np.testing.assert_allclose(got, r, rtol=1e-5, atol=1e-5, err_msg=part)


@pytest.mark.parametrize("weak_type", [False, True])
def test_cast_params_new_dtype_and_weak_type_reach_every_part(weak_type):
    t = _lora(jax.random.key(7), (6, 5), rank=2)
    params = dict(new_dtype=jnp.dtype(jnp.bfloat16), weak_type=weak_type, sharding=None)
    got = _strict(dispatch, prims.convert_element_type_p, t, **params)
    want = prims.convert_element_type_p.bind(t.w, **params)
    assert isinstance(got, LoraWeight) and got.dtype == want.dtype
    for part in (got.w, got.a, got.b):
        assert part.dtype == want.dtype and part.weak_type == want.weak_type == weak_type


def test_integer_cast_materializes_with_a_warning():
    t = _lora(jax.random.key(8), (6, 5), rank=2)
    with pytest.warns(UserWarning, match="convert_element_type was not handled by class LoraWeight"):
        got = qax.use_implicit_args(lambda t: (t * 4).astype(jnp.int32))(t)
    np.testing.assert_array_equal(got, (4 * t.materialize()).astype(jnp.int32))


# -- reduce_sum ---------------------------------------------------------------------------

# (shape, axes, stays a LoraWeight)
SUMS = [
    ((8, 6), (), True),
    ((8, 6), (0,), False),
    ((8, 6), (1,), False),
    ((8, 6), (0, 1), False),
    ((3, 8, 6), (0,), True),  # stack folded into the rank: 3 * 2 <= 6
    ((3, 8, 6), (1,), False),
    ((3, 8, 6), (2,), False),
    ((3, 8, 6), (0, 1), False),
    ((3, 8, 6), (0, 2), False),
    ((3, 8, 6), (1, 2), False),
    ((3, 8, 6), (0, 1, 2), False),
    ((4, 7, 5), (0,), False),  # 4 * 2 > 5: formed densely
    ((2, 3, 9, 7), (0,), True),
    ((2, 3, 9, 7), (1,), True),
    ((2, 3, 9, 7), (0, 1), False),  # 6 * 2 > 7
    ((2, 3, 9, 7), (1, 3), False),
    ((2, 3, 9, 7), (0, 2, 3), False),
]


def _sum_id(case):
    shape, axes, _ = case
    return f"{'x'.join(map(str, shape))}-axes{''.join(map(str, axes))}"


@pytest.mark.parametrize("shape, axes, factored", SUMS, ids=[_sum_id(c) for c in SUMS])
def test_reduce_sum_matches_merged(shape, axes, factored):
    t = _lora(jax.random.key(len(shape) * 10 + len(axes)), shape, rank=2)
    fn = lambda t: jnp.sum(t, axis=axes)  # noqa: E731
    got = _strict(jax.jit(qax.use_implicit_args(fn)), t)
    assert isinstance(got, LoraWeight) == factored
    if factored:
        assert got.scale == pytest.approx(t.scale)
        got = got.materialize()
    want = np.sum(_merged_np(t), axis=axes)
    assert got.shape == want.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape, axes, factored", SUMS, ids=[_sum_id(c) for c in SUMS])
def test_reduce_sum_gradients_match_merged_formula(shape, axes, factored):
    key = jax.random.key(len(shape) * 10 + len(axes) + 200)
    t = _lora(key, shape, rank=2, train_w=True)
    x = jax.random.normal(jax.random.fold_in(key, 1), shape[-2:-1])
    use = (lambda s: x @ s) if factored else (lambda s: s)  # a factored sum is used by a dot  # noqa: E731
    probe = jax.random.normal(jax.random.fold_in(key, 2), use(np.sum(np.zeros(shape), axis=axes)).shape)
    loss = qax.use_implicit_args(lambda t: jnp.sum(jnp.sin(use(jnp.sum(t, axis=axes))) * probe))

    def ref(wd, a, b):
        return jnp.sum(jnp.sin(use(jnp.sum(_merged(wd, a, b), axis=axes))) * probe)

    g = _strict(jax.jit(jax.grad(loss)), t)
    want = jax.jit(jax.grad(ref, argnums=(0, 1, 2)))(t.w, t.a, t.b)
    for part, got, r in zip("wab", (g.w, g.a, g.b), want):
        assert float(jnp.max(jnp.abs(r))) > 0
        np.testing.assert_allclose(got, r, rtol=1e-4, atol=1e-4, err_msg=part)


def test_reduce_sum_forms_no_full_size_product():
    n_in, n_out, r = 64, 48, 4
    t = _lora(jax.random.key(9), (3, n_in, n_out), r)
    fns = {
        "total": lambda t: jnp.sum(t),
        "over in": lambda t: jnp.sum(t, axis=1),
        "over out, per layer": lambda t: jnp.sum(t, axis=2),
        "mean": lambda t: jnp.mean(t),
        "vmapped over layers": lambda t: jax.vmap(lambda ti: jnp.sum(ti, axis=0))(t),
        "bf16 sum": lambda t: jnp.sum(t.astype(jnp.bfloat16), axis=(0, 2)),
    }
    for name, fn in fns.items():
        assert _strict(_full_products, fn, t, n_in=n_in, n_out=n_out) == [], name
        if name != "bf16 sum":  # (the cast makes a bf16 copy of w)
            jaxpr = jax.make_jaxpr(qax.use_implicit_args(fn))(t).jaxpr
            shapes = {tuple(v.aval.shape[-2:]) for e in _eqns(jaxpr) for v in e.outvars
                      if e.primitive.name != "stop_gradient"}  # (w itself, frozen)
            assert (n_in, n_out) not in shapes, name  # no weight-sized value at all: w is only reduced
        got = _strict(jax.jit(qax.use_implicit_args(fn)), t)
        want = fn(jnp.asarray(_merged_np(t), jnp.float32))
        tol = 2e-2 if got.dtype == jnp.bfloat16 else 1e-4
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                                   rtol=tol, atol=tol * float(jnp.max(jnp.abs(want.astype(jnp.float32)))), err_msg=name)


def test_dot_after_stack_sum_stays_factored():
    n_in, n_out = 64, 48
    t = _lora(jax.random.key(10), (3, n_in, n_out), rank=4)
    x = jax.random.normal(jax.random.key(11), (8, n_in))
    f = lambda t, x: x @ jnp.sum(t, axis=0)  # noqa: E731
    assert _strict(_full_products, f, t, x, n_in=n_in, n_out=n_out) == []
    np.testing.assert_allclose(_strict(jax.jit(qax.use_implicit_args(f)), t, x),
                               f(jnp.asarray(_merged_np(t), jnp.float32), x), rtol=1e-4, atol=1e-3)


def test_vmap_outside_over_stacked_weight():
    t = _lora(jax.random.key(12), (4, 8, 6), rank=2)
    got = _strict(jax.vmap(qax.use_implicit_args(lambda ti: (jnp.sum(ti, axis=0), 2 * ti))), t)
    want = _merged_np(t)
    np.testing.assert_allclose(got[0], want.sum(axis=1), rtol=1e-5, atol=1e-4)
    assert isinstance(got[1], LoraWeight)
    np.testing.assert_allclose(got[1].materialize(), 2 * want, rtol=1e-5, atol=1e-4)


def test_scan_over_scaled_stacked_weight():
    t = _lora(jax.random.key(13), (3, 6, 6), rank=2)
    x = jax.random.normal(jax.random.key(14), (2, 6))

    def model(ws, x):
        ws = jax.tree_util.tree_map(lambda v: v * 0.5, ws)
        return lax.scan(lambda h, w: (jnp.tanh(h @ w), None), x, ws)[0]

    f = qax.use_implicit_args(model)
    np.testing.assert_allclose(_strict(jax.jit(f), t, x), model(jnp.asarray(_merged_np(t), jnp.float32), x),
                               rtol=1e-5, atol=1e-5)
    scan = next(e for e in jax.make_jaxpr(f)(t, x).jaxpr.eqns if e.primitive.name == "scan")
    body = scan.params["jaxpr"].jaxpr
    assert sorted(tuple(v.aval.shape) for v in body.invars) == [(2, 6), (6, 2), (6, 2), (6, 6)]


# -- through namedjit: the function sees dense weights ------------------------------------

def test_namedjit_tree_map_scale_cast_and_sum_without_warnings():
    t = _lora(jax.random.key(15), (16, 8), rank=2)
    p = {"w": t, "bias": jnp.ones(8)}
    x = jax.random.normal(jax.random.key(16), (4, 16))
    merged = {"w": jnp.asarray(_merged_np(t), jnp.float32), "bias": p["bias"]}
    cases = {
        "x @ 2 w": lambda p, x: x @ jax.tree_util.tree_map(lambda t: t * 2, p)["w"],
        "x @ (-w / 4)": lambda p, x: x @ jax.tree_util.tree_map(lambda t: -t / 4, p)["w"],
        "bf16": lambda p, x: x.astype(jnp.bfloat16) @ jax.tree_util.tree_map(
            lambda t: t.astype(jnp.bfloat16), p)["w"],
        "weight norm-like sums": lambda p, x: x @ p["w"] / jnp.sum(p["w"], axis=0) + jnp.sum(p["w"]),
    }
    for name, f in cases.items():
        got = _strict(nx.namedjit(f), p, x)
        want = f(merged, x)
        tol = 2e-2 if want.dtype == jnp.bfloat16 else 1e-4
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=tol,
                                   atol=tol * float(jnp.max(jnp.abs(want.astype(jnp.float32)))), err_msg=name)
