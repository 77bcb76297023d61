"""Int4Weight under float casts (``t.astype(jnp.bfloat16)``): same codes, new dtype, dots unchanged."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.extend.core import primitives as prims

import namax as nx
import namax.quant as qax
from namax.quant import Int4Weight
from namax.quant import int4_dot
from namax.quant.handlers import dispatch
from namax.quant.int4 import quantize_array
from quant_cases import strict as _strict, all_eqns as _eqns

BF16 = jnp.bfloat16

# quantize once per shape as one compiled program
_quantize = jax.jit(quantize_array, static_argnums=(1, 2, 3), static_argnames=("stack_dims",))
_materialize = jax.jit(lambda q: q.materialize())


def _close(got, want, tol, err_msg=""):
    """Equal up to ``tol`` of ``want``'s largest entry (bf16 results round at 2^-8)."""
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * float(np.max(np.abs(want))), err_msg=err_msg)


# (name, dense shape, group_size, symmetric, in_axis, stack_dims)
WEIGHTS = [
    ("symmetric", (256, 16), 64, True, 0, 0),
    ("asymmetric", (256, 16), 64, False, 0, 0),
    ("[out, in] (transposed)", (16, 256), 64, True, 1, 0),
    ("stacked", (3, 64, 64), 32, False, 1, 1),
]


def _weight(case, key=0):
    name, shape, group, symmetric, in_axis, stack = case
    w = jax.random.normal(jax.random.key(key + len(name)), shape)
    return _quantize(w, group, symmetric, in_axis, stack_dims=stack)


@pytest.mark.parametrize("case", WEIGHTS, ids=[c[0] for c in WEIGHTS])
@pytest.mark.parametrize("dtype", [BF16, jnp.float16], ids=["bf16", "f16"])
def test_cast_keeps_codes_and_dequantises_into_the_new_dtype(case, dtype):
    q = _weight(case)
    cast = _strict(qax.use_implicit_args(lambda t: t.astype(dtype)), q)
    assert isinstance(cast, Int4Weight) and cast.dtype == dtype and cast.shape == q.shape
    assert (cast.group_size, cast.in_shape, cast.out_shape, cast.order) == (q.group_size, q.in_shape, q.out_shape,
                                                                            q.order)
    for part in ("packed", "scales", "zero_points"):
        old, new = getattr(q, part), getattr(cast, part)
        assert (old is None) == (new is None)
        if old is not None:
            assert new.dtype == old.dtype
            np.testing.assert_array_equal(new, old)
    got = _materialize(cast)
    assert got.dtype == dtype
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(_materialize(q).astype(dtype), np.float32))


@pytest.mark.parametrize("case", WEIGHTS, ids=[c[0] for c in WEIGHTS])
@pytest.mark.parametrize("rows", [1, 5], ids=["matvec", "5 rows"])
def test_dots_with_the_cast_weight(case, rows):
    q = _weight(case, key=10)
    dense = _materialize(q)
    stacked, transposed = case[5] > 0, case[4] == 1 and not case[5]
    n_in = q.shape[-1] if transposed else q.shape[-2]
    x = jax.random.normal(jax.random.key(rows), ((q.shape[0],) if stacked else ()) + (rows, n_in))
    if transposed:  # equinox-style W @ x
        mm = lambda x, w: (w @ x.swapaxes(-1, -2)).swapaxes(-1, -2)  # noqa: E731
        mm_f32 = lambda x, w: jnp.matmul(w, x.swapaxes(-1, -2),  # noqa: E731
                                         preferred_element_type=jnp.float32).swapaxes(-1, -2)
    else:
        mm = lambda x, w: x @ w  # noqa: E731
        mm_f32 = lambda x, w: jnp.matmul(x, w, preferred_element_type=jnp.float32)  # noqa: E731
    cases = {
        "bf16 @ bf16": (lambda x, w: mm(x.astype(BF16), w.astype(BF16)), BF16),
        "bf16 dot, f32 result": (lambda x, w: mm_f32(x.astype(BF16), w.astype(BF16)), jnp.float32),
        "f32 @ bf16 weight": (lambda x, w: mm(x, w.astype(BF16)), jnp.float32),
        "f32 dot of bf16 weight, f32 result": (lambda x, w: lax.dot_general(
            x, w.astype(BF16), (((x.ndim - 1,), (w.ndim - 2,)), ((0,), (0,)) if stacked else ((), ())),
            preferred_element_type=jnp.float32), jnp.float32),
        "bf16 then f32": (lambda x, w: mm(x, w.astype(BF16).astype(jnp.float32)), jnp.float32),
    }
    for name, (f, out_dtype) in cases.items():
        if transposed and name.startswith("f32 dot of"):
            continue
        got = _strict(jax.jit(qax.use_implicit_args(f)), x, q)
        want = f(x, dense)
        assert got.dtype == want.dtype == out_dtype, name
        _close(got, want, 2e-2, err_msg=name)


def test_cast_weight_dot_never_forms_the_dense_weight():
    n_in, n_out = 1024, 64
    q = _quantize(jax.random.normal(jax.random.key(1), (n_in, n_out)), 128, True, 0)
    x = jnp.ones((4, n_in))
    for f in (lambda x, w: x.astype(BF16) @ w.astype(BF16),
              lambda x, w: jnp.matmul(x.astype(BF16), w.astype(BF16), preferred_element_type=jnp.float32),
              lambda x, w: x[:1] @ w.astype(BF16).astype(jnp.float32)):
        jaxpr = _strict(jax.make_jaxpr(qax.use_implicit_args(f)), x, q).jaxpr
        assert _largest_bytes(jaxpr) <= n_in * n_out  # at most half a bf16 weight: codes, chunks of it
    # the check sees a materialized bf16 weight
    jaxpr = jax.make_jaxpr(lambda x, w: x.astype(BF16) @ w.materialize().astype(BF16))(x, q).jaxpr
    assert _largest_bytes(jaxpr) >= 2 * n_in * n_out


def _largest_bytes(jaxpr):
    return max(v.aval.size * v.aval.dtype.itemsize for e in _eqns(jaxpr) for v in e.outvars
               if hasattr(v.aval, "dtype"))


def test_grad_wrt_x_through_cast_weight():
    q = _weight(WEIGHTS[1], key=20)
    x = jax.random.normal(jax.random.key(21), (3, 256))
    fn = lambda x, w: jnp.sum(jnp.tanh(jnp.matmul(x.astype(BF16), w.astype(BF16),  # noqa: E731
                                                  preferred_element_type=jnp.float32)) ** 2)
    got = _strict(jax.jit(jax.grad(qax.use_implicit_args(fn))), x, q)
    want = jax.jit(jax.grad(fn))(x, _materialize(q))
    assert got.dtype == want.dtype == jnp.float32
    _close(got, want, 3e-2)


def test_tree_map_cast_then_scan_over_stacked_layers():
    q = _quantize(0.15 * jax.random.normal(jax.random.key(30), (3, 64, 64)), 32, False, 1, stack_dims=1)
    p = {"layers": q, "norm": jnp.ones(64)}
    x = jax.random.normal(jax.random.key(31), (2, 64))

    def model(p, x):
        p = jax.tree_util.tree_map(lambda t: t.astype(BF16), p)
        h = lax.scan(lambda h, w: (jnp.tanh(h @ w), None), (x * p["norm"]).astype(BF16), p["layers"])[0]
        return h.astype(jnp.float32)

    f = qax.use_implicit_args(model)
    got = _strict(jax.jit(f), p, x)
    _close(got, model({"layers": _materialize(q), "norm": p["norm"]}, x), 3e-2)
    scan = next(e for e in jax.make_jaxpr(f)(p, x).jaxpr.eqns if e.primitive.name == "scan")
    # sliced leaf by leaf: packed codes, scales and zero points of one layer, no dense layer
    n_xs = len(scan.invars) - scan.params["num_consts"] - scan.params["num_carry"]
    layer_in = [(tuple(v.aval.shape), v.aval.dtype.name) for v in scan.params["jaxpr"].jaxpr.invars[-n_xs:]]
    assert layer_in == [((64, 32), "uint8"), ((2, 64), "bfloat16"), ((2, 32), "uint8")]


def test_narrowing_then_widening_cast_gives_the_float32_values():
    q = _weight(WEIGHTS[0], key=40)
    back = _strict(qax.use_implicit_args(lambda t: t.astype(BF16).astype(jnp.float32)), q)
    assert isinstance(back, Int4Weight) and back.dtype == jnp.float32
    np.testing.assert_array_equal(_materialize(back), _materialize(q))  # not rounded twice (documented)
    chain = _materialize(q).astype(BF16).astype(jnp.float32)  # the dense chain, within bf16 rounding
    np.testing.assert_allclose(_materialize(back), chain, rtol=2 ** -8, atol=0)


@pytest.mark.parametrize("weak_type", [False, True])
def test_cast_params(weak_type):
    q = _weight(WEIGHTS[0], key=50)
    params = dict(new_dtype=jnp.dtype(BF16), weak_type=weak_type, sharding=None)
    got = _strict(dispatch, prims.convert_element_type_p, q, **params)
    want = prims.convert_element_type_p.bind(_materialize(q), **params)
    assert isinstance(got, Int4Weight) and got.dtype == want.dtype and got.shape == want.shape
    same = _strict(dispatch, prims.convert_element_type_p, q, new_dtype=q.dtype, weak_type=weak_type, sharding=None)
    assert same is q


def test_integer_cast_materializes_with_a_warning():
    q = _weight(WEIGHTS[0], key=60)
    with pytest.warns(UserWarning, match="convert_element_type was not handled by class Int4Weight"):
        got = qax.use_implicit_args(lambda t: t.astype(jnp.int32))(q)
    want = _materialize(q).astype(jnp.int32)
    assert np.any(want != 0)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("form", ["scan", "grouped"])
def test_namedjit_tree_map_cast_without_warnings(form, monkeypatch):
    monkeypatch.setattr(int4_dot, "DOT_FORM", form)
    q = _weight(WEIGHTS[0], key=70)
    p = {"w": q, "b": jnp.ones(16)}
    x = jax.random.normal(jax.random.key(71), (4, 256))
    cast = lambda p: jax.tree_util.tree_map(lambda t: t.astype(BF16), p)  # noqa: E731
    cases = {
        "x.astype(bf16) @ w": lambda p, x: x.astype(BF16) @ cast(p)["w"] + cast(p)["b"],
        "f32 result": lambda p, x: jnp.matmul(x.astype(BF16), cast(p)["w"], preferred_element_type=jnp.float32),
    }
    dense = {"w": _materialize(q), "b": p["b"]}
    for name, f in cases.items():
        got = _strict(nx.namedjit(f), p, x)
        want = f(dense, x)
        assert got.dtype == want.dtype, name
        _close(got, want, 2e-2, err_msg=name)


def test_int4_scales_are_frozen_and_input_gradient_is_exact():
    """A gradient with respect to an Int4Weight is zero (its scales are frozen; codes are
    integers), while the gradient with respect to the activation equals the dense one."""
    w = qax.int4.quantize_array(jax.random.normal(jax.random.key(0), (256, 64)))
    x = jax.random.normal(jax.random.key(1), (3, 256))
    probe = jax.random.normal(jax.random.key(2), (3, 64))
    loss = qax.use_implicit_args(lambda w, x: jnp.sum(jnp.sin(x @ w) * probe))
    g = jax.grad(loss, allow_int=True)(w, x)
    np.testing.assert_array_equal(np.asarray(g.scales), np.zeros(w.scales.shape, np.float32))
    gx = jax.grad(loss, argnums=1)(w, x)
    want = jax.grad(lambda x: jnp.sum(jnp.sin(x @ w.materialize()) * probe))(x)
    np.testing.assert_allclose(gx, want, rtol=1e-4, atol=1e-4)
