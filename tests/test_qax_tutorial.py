"""The Qax tutorial's examples, run against ``namax.quant`` (imported as ``qax``).

Differences from the tutorial text, all forced by the environment: a small plain-jnp MLP
replaces GPT-2/T5 (no downloads here), and ``jax.core.get_aval`` (removed from jax 0.10)
is replaced by a two-line shim.
"""

import warnings
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import namax.quant as qax


def get_aval(x):
    return x.aval if isinstance(x, qax.ImplicitArray) else jax.typeof(x)


class Zeros(qax.ImplicitArray):
    default_dtype = jnp.float32

    def materialize(self):
        return jnp.zeros(self.shape, self.dtype)

    def __str__(self):
        return f"Zeros({self.shape}, {self.dtype})"


def get_binop_result_shape_dtype(a, b):
    out_shape = jnp.broadcast_shapes(jnp.shape(a), jnp.shape(b))
    out_dtype = jnp.result_type(a.dtype, b.dtype)
    return out_shape, out_dtype


def test_zeros_add_materializes_then_is_handled():
    z = Zeros(shape=(2, 3))
    assert z.shape == (2, 3) and z.dtype == jnp.float32

    @qax.use_implicit_args
    def f(x, y):
        return (x + y)[0, 0]

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert float(f(z, jnp.ones(3))) == 1.0
    assert [str(r.message) for r in rec] == [
        "Primitive add was not handled by class Zeros, so implicit args will be materialized."]
    assert all(r.category is UserWarning for r in rec)

    @qax.primitive_handler("add")
    def my_add_handler(primitive, a: Zeros, b):
        out_shape, out_dtype = get_binop_result_shape_dtype(a, b)
        if isinstance(b, Zeros):
            return Zeros(shape=out_shape, dtype=out_dtype)
        return jnp.broadcast_to(b, out_shape).astype(out_dtype)

    @qax.primitive_handler("mul")
    def handle_mul(primitive, a: Zeros, b):
        out_shape, out_dtype = get_binop_result_shape_dtype(a, b)
        return Zeros(shape=out_shape, dtype=out_dtype)

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert float(f(z, jnp.ones(3))) == 1.0

        @jax.jit
        @qax.use_implicit_args
        def g(x, y):
            return (1 + x) * y

        out = g(z, z)
    assert rec == []
    assert isinstance(out, Zeros) and str(out) == "Zeros((2, 3), float32)"


def test_replace_biases_with_symbolic_zeros():
    @qax.primitive_handler("broadcast_in_dim")
    def broadcast(primitive, a: Zeros, *, shape, broadcast_dimensions):
        result_shape = jax.eval_shape(
            partial(jax.lax.broadcast_in_dim, shape=shape, broadcast_dimensions=broadcast_dimensions), a.aval
        ).shape
        return Zeros(shape=result_shape, dtype=a.dtype)

    @qax.primitive_handler("add")
    def add_zeros(primitive, a: Zeros, b):
        out_shape, out_dtype = get_binop_result_shape_dtype(a, b)
        if isinstance(b, Zeros):
            return Zeros(shape=out_shape, dtype=out_dtype)
        return jnp.broadcast_to(b, out_shape).astype(out_dtype)

    keys = jax.random.split(jax.random.key(0), 4)
    params = {"h": {"0": {"kernel": jax.random.normal(keys[0], (5, 8)), "bias": jax.random.normal(keys[1], (8,))},
                    "1": {"kernel": jax.random.normal(keys[2], (8, 3)), "bias": jax.random.normal(keys[3], (3,))}},
              "ln": {"scale": jnp.ones(8)}}

    def model(x, params):
        h = jnp.tanh(x @ params["h"]["0"]["kernel"] + params["h"]["0"]["bias"]) * params["ln"]["scale"]
        return h @ params["h"]["1"]["kernel"] + params["h"]["1"]["bias"]

    def replace_biases(params, replacer):
        def maybe_replace_val(path, val):
            if val.ndim != 1:
                return val
            if any(isinstance(p, jax.tree_util.DictKey) and p.key.startswith("ln") for p in path):
                return val
            return replacer(shape=val.shape, dtype=val.dtype)
        return jax.tree_util.tree_map_with_path(maybe_replace_val, params)

    x = jnp.arange(10.0).reshape(2, 5) / 10
    dense = model(x, replace_biases(params, jnp.zeros))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        symbolic = qax.use_implicit_args(model)(x, params=replace_biases(params, Zeros))
    assert rec == []
    np.testing.assert_allclose(symbolic, dense, rtol=1e-6)


@dataclass
class LoraMatrix(qax.ImplicitArray):
    """Represent W + A B^T"""
    w: qax.ArrayValue
    a: qax.ArrayValue
    b: qax.ArrayValue
    is_array_happy: bool = qax.aux_field(default=True)

    def __post_init__(self):
        super().__post_init__()
        w_aval, a_aval, b_aval = get_aval(self.w), get_aval(self.a), get_aval(self.b)
        assert w_aval.ndim == a_aval.ndim == b_aval.ndim == 2
        assert a_aval.shape[1] == b_aval.shape[1]
        assert a_aval.shape[0] == w_aval.shape[0]
        assert b_aval.shape[0] == w_aval.shape[1]
        assert a_aval.dtype == b_aval.dtype == w_aval.dtype

    def materialize(self):
        return self.w + self.a @ self.b.T


@qax.primitive_handler("dot_general")
def f(primitive, x: jax.Array, w: LoraMatrix, *, dimension_numbers, **kwargs):
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    if not (len(w.shape) == 2 and lhs_contract == (x.ndim - 1,) and rhs_contract == (0,)
            and lhs_batch == () and rhs_batch == ()):
        return NotImplemented
    kwargs = {**kwargs, "dimension_numbers": dimension_numbers}
    result = qax.default_handler(primitive, x, w.w, **kwargs)
    xa = qax.default_handler(primitive, x, w.a, **kwargs)
    xab = qax.default_handler(primitive, xa, w.b.T, **kwargs)
    result += xab
    return result


def lora_from_tree(tree, key, lora_dim=2):
    def iter_keys(key):
        while True:
            key, k2 = jax.random.split(key)
            yield k2

    key_it = iter_keys(key)

    def map_fn(path, val):
        if val.ndim != 2:
            return val
        if any(isinstance(p, jax.tree_util.DictKey) and p.key == "embedding" for p in path):
            return val
        a = jax.random.normal(next(key_it), (val.shape[0], lora_dim), val.dtype)
        b = jnp.zeros((val.shape[1], lora_dim), val.dtype)
        return LoraMatrix(val, a, b)

    return jax.tree_util.tree_map_with_path(map_fn, tree)


def _mlp_params(key):
    k = jax.random.split(key, 3)
    return {"embedding": jax.random.normal(k[0], (10, 6)),
            "dense1": jax.random.normal(k[1], (6, 16)) / 3, "dense2": jax.random.normal(k[2], (16, 10)) / 4}


def _mlp(tokens, params):
    h = params["embedding"][tokens]
    return jax.nn.gelu(h @ params["dense1"]) @ params["dense2"]


def test_lora_forward_is_unchanged_without_warnings():
    params = _mlp_params(jax.random.key(0))
    lora_params = lora_from_tree(params, jax.random.key(1234))
    assert isinstance(lora_params["dense1"], LoraMatrix) and not isinstance(lora_params["embedding"], LoraMatrix)
    tokens = jnp.array([[1, 2, 3]])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = qax.use_implicit_args(_mlp)(tokens, params=lora_params)
    assert rec == []
    assert float(jnp.max(jnp.abs(out - _mlp(tokens, params)))) == 0.0


def test_freeze_keys_training_loop():
    params = _mlp_params(jax.random.key(0))
    lora_params = lora_from_tree(params, jax.random.key(1234))
    inputs = jnp.array([[1, 4, 2, 7, 3]])
    optimizer = qax.utils.freeze_keys(optax.adam(3e-2), LoraMatrix, ["w"])

    @qax.use_implicit_args
    def loss_fn(params):
        ids, targets = inputs[:, :-1], inputs[:, 1:]
        logprobs = jax.nn.log_softmax(_mlp(ids, params))
        return -jnp.sum(jnp.take_along_axis(logprobs, targets[:, :, None], axis=-1))

    grad_fn = jax.value_and_grad(loss_fn)

    @jax.jit
    def update(params, opt_state):
        loss, grads = grad_fn(params)
        updates, new_opt_state = optimizer.update(grads, opt_state, params=params)
        return loss, optax.apply_updates(params, updates), new_opt_state

    opt_state = optimizer.init(lora_params)
    losses = []
    for _ in range(20):
        loss, new_params, opt_state = update(lora_params, opt_state)
        losses.append(float(loss))
        assert new_params["dense1"].w is not lora_params["dense1"].w
        np.testing.assert_array_equal(new_params["dense1"].w, params["dense1"])  # frozen
        lora_params = new_params
    assert losses[-1] < 0.5 * losses[0]
    assert float(jnp.max(jnp.abs(lora_params["dense1"].b))) > 0  # b trained


def test_nested_lora_of_symbolic_zeros_warnings():
    @qax.use_implicit_args
    def g(w, x):
        return jnp.sum(x @ w)

    w = jnp.ones((3, 5))
    x = jnp.arange(3, dtype=jnp.float32)
    lora_with_symbolic_zero = LoraMatrix(w=w, a=Zeros(shape=(w.shape[0], 6)), b=Zeros(shape=(w.shape[1], 6)))
    assert float(g(w, x)) == 15.0
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert float(g(lora_with_symbolic_zero, x)) == 15.0
    assert [str(r.message) for r in rec] == [
        "Primitive dot_general was not handled by class Zeros, so implicit args will be materialized.",
        "Primitive transpose was not handled by class Zeros, so implicit args will be materialized.",
    ]


def test_lora_matrix_validation_runs():
    with pytest.raises(ValueError, match="could not infer the shape/dtype of LoraMatrix"):
        LoraMatrix(jnp.ones((3, 5)), jnp.ones((4, 2)), jnp.ones((5, 2)))
    with pytest.raises(AssertionError):  # shapes broadcast in materialize, but the validation rejects them
        LoraMatrix(jnp.ones((3, 5)), jnp.ones((1, 2)), jnp.ones((5, 2)))
