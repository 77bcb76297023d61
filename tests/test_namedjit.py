"""namedjit as a drop-in for jax.jit: values, caching, statics, donation, modules, grads, scan."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import namax as nx
from namax.jit import namedjit

B, E, M, L = nx.make_axes(batch=8, embed=16, mlp=32, layer=3)


def _named(key, axes, scale=1.0):
    return nx.named(jax.random.normal(jax.random.PRNGKey(key), tuple(a.size for a in axes)) * scale, axes)


def mlp_loss(params, x):
    w1, w2 = params
    h = nx.tanh(nx.dot(x, w1, axis=E))
    y = nx.dot(h, w2, axis=M)
    return nx.mean(y * y).array


@pytest.fixture
def params():
    return _named(1, (E, M), 0.2), _named(2, (M, E), 0.2)


@pytest.fixture
def x():
    return _named(0, (B, E))


def test_values_and_names_match_jax_jit(params, x):
    f = namedjit(lambda p, x: nx.tanh(nx.dot(x, p[0], axis=E)))
    out = f(params, x)
    ref = jax.jit(lambda p, x: nx.tanh(nx.dot(x, p[0], axis=E)))(params, x)
    assert isinstance(out, nx.NamedArray) and out.axes == (B, M)
    np.testing.assert_allclose(out.array, ref.array, rtol=1e-6)
    expected = np.tanh(np.asarray(x.array) @ np.asarray(params[0].array))
    np.testing.assert_allclose(out.array, expected, rtol=1e-5, atol=1e-6)


def test_grad_inside_matches_plain(params, x):
    step = namedjit(lambda p, x: jax.value_and_grad(mlp_loss)(p, x))
    loss, grads = step(params, x)

    def plain(w1, w2, x):
        y = jnp.tanh(x @ w1) @ w2
        return jnp.mean(y * y)

    ref_loss, ref_grads = jax.value_and_grad(plain, argnums=(0, 1))(params[0].array, params[1].array, x.array)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g.array, r, rtol=1e-4, atol=1e-6)
    assert grads[0].axes == params[0].axes


def test_second_call_does_not_retrace(params, x):
    f = namedjit(mlp_loss)
    f(params, x)
    f(params, x)
    assert f.trace_count == 1
    f(params, _named(3, (B, E)))  # same shapes, new values
    assert f.trace_count == 1
    f(params, _named(3, (B.resize(4), E)))  # new shape
    assert f.trace_count == 2
    f(params, nx.rename(x, {"batch": "other"}))  # new names are a new signature
    assert f.trace_count == 3


def test_static_argnums_and_argnames(params, x):
    def scaled(p, x, power, *, shift):
        return mlp_loss(p, x) ** power + shift

    f = namedjit(scaled, static_argnums=2, static_argnames="shift")
    a = f(params, x, 2, shift=1.0)
    assert f.trace_count == 1
    f(params, x, 2, shift=1.0)
    assert f.trace_count == 1
    b = f(params, x, 3, shift=1.0)
    assert f.trace_count == 2
    base = float(mlp_loss(params, x))
    np.testing.assert_allclose([a, b], [base ** 2 + 1, base ** 3 + 1], rtol=1e-5)


def test_donation_marks_buffers(x):
    f = namedjit(lambda x: x * 2, donate_argnums=0)
    text = f.lower(x).as_text()
    assert "tf.aliasing_output" in text or "jax.buffer_donor" in text
    y = f(nx.named(jnp.array(x.array), x.axes))
    np.testing.assert_allclose(y.array, x.array * 2)


def test_equinox_module_with_function_leaf():
    mlp = eqx.nn.MLP(4, 2, 8, 2, key=jax.random.PRNGKey(0))
    f = namedjit(lambda m, v: m(v))
    v = jnp.linspace(-1, 1, 4)
    np.testing.assert_allclose(f(mlp, v), mlp(v), rtol=1e-6)
    f(mlp, v)
    assert f.trace_count == 1


def test_scan_over_layers(x):
    ws = _named(5, (L, E.alias("embed_in"), E), 0.3)

    def forward(ws, x):
        def body(h, w):
            w = nx.NamedArray(w, (E.alias("embed_in"), E))
            h2 = nx.tanh(nx.dot(h.rename({"embed": "embed_in"}), w, axis="embed_in"))
            return h2, None

        return jax.lax.scan(body, x, ws.array)[0]

    out = namedjit(forward, axis_resources={"batch": "data"}, mesh=_mesh())(ws, x)
    h = np.asarray(x.array)
    for w in np.asarray(ws.array):
        h = np.tanh(h @ w)
    np.testing.assert_allclose(out.array, h, rtol=1e-4, atol=1e-5)
    assert out.axes == x.axes


def test_decorator_form_and_kwargs(params, x):
    @namedjit(static_argnames="square")
    def f(p, x, square=True):
        v = mlp_loss(p, x)
        return v * v if square else v

    np.testing.assert_allclose(f(params, x, square=False), mlp_loss(params, x), rtol=1e-6)


def test_lower_gives_stablehlo_with_names(params, x):
    text = namedjit(lambda p, x: nx.dot(x, p[0], axis=E)).lower(params, x).as_text()
    assert 'named_axes = "batch,mlp"' in text


def _mesh():
    from jax.sharding import AxisType

    return jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)


def test_lowered_module_is_annotated_and_compiles(params, x):
    f = namedjit(lambda p, x: nx.sum(nx.tanh(nx.dot(x, p[0], axis=E)), "mlp"))
    lowered, report = f.lower_with_report(params, x)
    text = lowered.as_text()
    main = next(line for line in text.splitlines() if "func.func public @main" in line)
    # arguments and results are named, and so is the dot_general that produced a named value
    assert main.count("named_axes") == 4, main  # p[1] is unused but kept (keep_unused: names align by position)
    assert 'named_axes = "batch"' in main.split("->")[1]
    dot = next(line for line in text.splitlines() if "stablehlo.dot_general" in line)
    assert 'named_axes = "batch,mlp"' in dot
    assert report.tags == 3 and report.producers_named >= 3 and report.arguments_named == 3
    # annotating is idempotent: a second lowering (JAX's cached module) reports the same
    _, again = f.lower_with_report(params, x)
    assert (again.tags, again.producers_named, again.arguments_named) == \
        (report.tags, report.producers_named, report.arguments_named)
    compiled = lowered.compile()
    np.testing.assert_allclose(compiled(params, x).array, f(params, x).array, rtol=1e-6)
    assert 'named_axes="batch,mlp"' in compiled.as_text()
    # JAX's own cached lowering is untouched
    plain = jax.jit(lambda p, x: nx.sum(nx.tanh(nx.dot(x, p[0], axis=E)), "mlp")).lower(params, x).as_text()
    assert "func.func public @main(%arg0: tensor<16x32xf32>," in plain
