"""namax.random distributions, the fft family and the poly family against jax.random / jnp references."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import namax as nx
from namax import Axis

B, E, V = Axis("batch", 3), Axis("embed", 4), Axis("vocab", 5)
KEY = jax.random.key(7)


def tagged_names(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args)
    return [e.params["axes"] for e in jaxpr.jaxpr.eqns if e.primitive.name == "named_axes"]


# --- random ---------------------------------------------------------------------------------
# name -> (scalar parameters after ``shape``, the jax.random reference on a positional shape)
SCALAR_DRAWS = {
    "poisson": ((3.5,), lambda k, s: jax.random.poisson(k, 3.5, s)),
    "exponential": ((), lambda k, s: jax.random.exponential(k, s)),
    "gamma": ((2.5,), lambda k, s: jax.random.gamma(k, 2.5, s)),
    "beta": ((2.0, 0.5), lambda k, s: jax.random.beta(k, 2.0, 0.5, s)),
    "laplace": ((), lambda k, s: jax.random.laplace(k, s)),
    "cauchy": ((), lambda k, s: jax.random.cauchy(k, s)),
    "logistic": ((), lambda k, s: jax.random.logistic(k, s)),
    "rademacher": ((), lambda k, s: jax.random.rademacher(k, s, jnp.float32)),
    "t": ((3.0,), lambda k, s: jax.random.t(k, 3.0, s)),
    "pareto": ((2.0,), lambda k, s: jax.random.pareto(k, 2.0, s)),
    "loggamma": ((0.3,), lambda k, s: jax.random.loggamma(k, 0.3, s)),
    "weibull_min": ((1.5, 0.7), lambda k, s: jax.random.weibull_min(k, 1.5, 0.7, s)),
    "normal": ((), lambda k, s: jax.random.normal(k, s)),
    "gumbel": ((), lambda k, s: jax.random.gumbel(k, s)),
    "truncated_normal": ((-0.5, 2.0), lambda k, s: jax.random.truncated_normal(k, -0.5, 2.0, s)),
    "randint": ((-3, 11), lambda k, s: jax.random.randint(k, s, -3, 11)),
}

# Haliax's parameter lists (key, shape first), checked against marin-haliax.
HALIAX_SIGNATURES = {
    "poisson": ["lam", "dtype"], "exponential": ["dtype"], "gamma": ["a", "dtype"], "beta": ["a", "b", "dtype"],
    "laplace": ["dtype"], "cauchy": ["dtype"], "logistic": ["dtype"], "rademacher": ["dtype"], "t": ["df", "dtype"],
    "pareto": ["b", "dtype"], "loggamma": ["a", "dtype"], "weibull_min": ["scale", "concentration", "dtype"],
    "normal": ["dtype"], "gumbel": ["dtype"], "uniform": ["dtype", "minval", "maxval"], "bernoulli": ["p"],
    "randint": ["minval", "maxval", "dtype"], "truncated_normal": ["lower", "upper", "dtype"],
    "ball": ["D", "p", "dtype"], "choice": ["a", "axis", "replace", "p"],
}


@pytest.mark.parametrize("name", sorted(SCALAR_DRAWS))
def test_scalar_parameters_draw_what_jax_random_draws(name):
    params, reference = SCALAR_DRAWS[name]
    x = getattr(nx.random, name)(KEY, (B, E), *params)
    assert x.axes == (B, E)
    expected = reference(KEY, (3, 4))
    assert x.dtype == expected.dtype
    np.testing.assert_array_equal(x.array, expected)


def test_draws_under_jit_match_jax_random_under_jit():
    lo = nx.named(jnp.array([-1.0, 0.0, 2.0]), B)
    x = jax.jit(lambda k, lo: nx.random.uniform(k, (E, B), minval=lo, maxval=3.0))(KEY, lo)
    np.testing.assert_array_equal(
        x.array, jax.jit(lambda k: jax.random.uniform(k, (4, 3), minval=lo.array[None], maxval=3.0))(KEY))
    y = jax.jit(lambda k: nx.random.laplace(k, (E, V)))(KEY)
    assert y.axes == (E, V)
    np.testing.assert_array_equal(y.array, jax.jit(lambda k: jax.random.laplace(k, (4, 5)))(KEY))


def test_signatures_follow_haliax():
    for name, params in HALIAX_SIGNATURES.items():
        names = list(inspect.signature(getattr(nx.random, name)).parameters)
        assert names == ["key", "shape", *params], name
    assert list(inspect.signature(nx.random.permutation).parameters)[:4] == ["key", "x", "axis", "independent"]
    assert inspect.signature(nx.random.gamma).parameters["dtype"].default is float
    assert inspect.signature(nx.random.poisson).parameters["dtype"].default is int


def test_dtype_is_passed_through():
    x = nx.random.pareto(KEY, (B,), 2.0, jnp.bfloat16)
    np.testing.assert_array_equal(x.array, jax.random.pareto(KEY, 2.0, (3,), jnp.bfloat16))
    r = nx.random.rademacher(KEY, (B, E), dtype=jnp.int8)
    assert r.dtype == jnp.int8
    np.testing.assert_array_equal(r.array, jax.random.rademacher(KEY, (3, 4), jnp.int8))


# name -> (how to call it with NamedArray parameters, the jax.random reference for raw parameters);
# one generic definition serves every distribution, so a few (cheap to compile) stand for all
NAMED_DRAWS = {
    "beta": (lambda k, s, a, b: nx.random.beta(k, s, a, b), lambda k, s, a, b: jax.random.beta(k, a, b, s)),
    "pareto": (lambda k, s, a, b: nx.random.pareto(k, s, a), lambda k, s, a, b: jax.random.pareto(k, a, s)),
    "weibull_min": (lambda k, s, a, b: nx.random.weibull_min(k, s, a, b),
                    lambda k, s, a, b: jax.random.weibull_min(k, a, b, s)),
    "truncated_normal": (lambda k, s, a, b: nx.random.truncated_normal(k, s, -a, b),
                         lambda k, s, a, b: jax.random.truncated_normal(k, -a, b, s)),
    "uniform": (lambda k, s, a, b: nx.random.uniform(k, s, minval=-a, maxval=b),
                lambda k, s, a, b: jax.random.uniform(k, s, minval=-a, maxval=b)),
}


def expanded(raw, names, shape):
    """``raw`` (laid out as ``names``) transposed to the order of ``shape``, size-1 where it lacks an axis."""
    order = sorted(range(len(names)), key=lambda i: [ax.name for ax in shape].index(names[i]))
    return np.transpose(raw, order).reshape([ax.size if ax.name in names else 1 for ax in shape])


def check_named_draw(name, shape, a_axes, b_axes):
    by_name = {ax.name: ax for ax in shape}
    rng = np.random.default_rng(len(a_axes) + 3 * len(b_axes))

    def parameter(names):
        raw = rng.uniform(0.5, 3.0, size=[by_name[n].size for n in names]).astype(np.float32)
        return nx.named(jnp.asarray(raw), tuple(names)), expanded(raw, names, shape)

    (a, a_raw), (b, b_raw) = parameter(a_axes), parameter(b_axes)
    ours, reference = NAMED_DRAWS[name]
    x = ours(KEY, shape, a, b)
    assert x.axes == shape
    np.testing.assert_array_equal(x.array, reference(KEY, tuple(ax.size for ax in shape), a_raw, b_raw))


@pytest.mark.parametrize("name", sorted(NAMED_DRAWS))
def test_named_parameters_broadcast_by_name(name):
    check_named_draw(name, (B, E, V), ("vocab", "batch"), ("embed",))


@settings(max_examples=10)
@given(
    name=st.sampled_from(["uniform", "truncated_normal", "weibull_min", "pareto"]),
    sizes=st.lists(st.integers(1, 3), min_size=3, max_size=3),
    a_axes=st.permutations(["batch", "embed", "vocab"]).flatmap(lambda p: st.integers(0, 3).map(lambda k: p[:k])),
    b_axes=st.permutations(["batch", "embed", "vocab"]).flatmap(lambda p: st.integers(0, 3).map(lambda k: p[:k])),
)
def test_named_parameters_broadcast_for_any_axes(name, sizes, a_axes, b_axes):
    check_named_draw(name, tuple(Axis(n, s) for n, s in zip(("batch", "embed", "vocab"), sizes)), a_axes, b_axes)


def test_parameter_axis_order_does_not_matter():
    b = nx.named(jax.random.uniform(jax.random.key(1), (3, 5), minval=0.5, maxval=4.0), (B, V))
    x = nx.random.pareto(KEY, (V, E, B), b)
    y = nx.random.pareto(KEY, (V, E, B), b.rearrange((V, B)))
    np.testing.assert_array_equal(x.array, y.array)
    np.testing.assert_array_equal(x.array, jax.random.pareto(KEY, b.array.T[:, None, :], (5, 4, 3)))


def test_ball_matches_jax_random():
    D = Axis("dim", 3)
    x = nx.random.ball(KEY, (B, E), D, 1.0)
    assert x.axes == (B, E, D)
    np.testing.assert_array_equal(x.array, jax.random.ball(KEY, 3, 1.0, (3, 4)))
    assert float(jnp.abs(x.array).sum(-1).max()) <= 1.0


def test_choice_and_permutation_follow_haliax_calls():
    a = nx.named(jnp.arange(15.0).reshape(3, 5), (B, V))
    S = Axis("sample", 4)
    y = nx.random.choice(KEY, S, a, "batch")  # Haliax: shape + (a's axes - axis)
    assert y.axes == (S, V)
    np.testing.assert_array_equal(y.array, jax.random.choice(KEY, a.array, (4,), axis=0))
    p = nx.random.permutation(KEY, a, "vocab", True)
    np.testing.assert_array_equal(p.array, jax.random.permutation(KEY, a.array, axis=1, independent=True))
    g = nx.random.gumbel(KEY, (B,), jnp.bfloat16)
    np.testing.assert_array_equal(g.array, jax.random.gumbel(KEY, (3,), jnp.bfloat16))


def test_new_distributions_are_tagged():
    assert tagged_names(lambda k: nx.random.beta(k, (B, E), 2.0, 2.0), KEY)[-1] == ("batch", "embed")
    assert tagged_names(lambda k: nx.random.ball(k, (B,), E), KEY)[-1] == ("batch", "embed")


def test_random_distribution_errors():
    with pytest.raises(ValueError, match=r"gamma: a has axes \['vocab'\] that are not in shape \(batch:3, embed:4\)"):
        nx.random.gamma(KEY, (B, E), nx.ones((V,)))
    with pytest.raises(ValueError, match="Axis 'batch' has size 2 in one of the b and shape"):
        nx.random.beta(KEY, (B, E), 1.0, nx.ones((Axis("batch", 2),)))
    with pytest.raises(TypeError, match=r"weibull_min: concentration is an unnamed array of shape \(4,\)"):
        nx.random.weibull_min(KEY, (E,), 1.0, jnp.ones(4))
    with pytest.raises(TypeError, match=r"poisson\(key, shape, lam, dtype=<class 'int'>\): missing a required argument: 'lam'"):
        nx.random.poisson(KEY, (B,))
    with pytest.raises(TypeError, match="t.*unexpected keyword argument 'dof'"):
        nx.random.t(KEY, (B,), 3.0, dof=3.0)
    with pytest.raises(TypeError, match="pareto: shape must be an Axis or a tuple of Axes"):
        nx.random.pareto(KEY, ("batch",), 2.0)
    with pytest.raises(TypeError, match="ball: D must be an Axis"):
        nx.random.ball(KEY, (B,), 3)
    with pytest.raises(ValueError, match="ball: the ball's axis 'batch' is already in shape"):
        nx.random.ball(KEY, (B, E), B)


# --- fft ------------------------------------------------------------------------------------
X, Y = Axis("x", 4), Axis("y", 6)


def complex_signal(shape=(4, 6), names=("x", "y"), seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    raw = jax.random.normal(k1, shape) + 1j * jax.random.normal(k2, shape)
    return nx.named(raw, names)


def real_signal(shape=(4, 6), names=("x", "y"), seed=0):
    return nx.named(jax.random.normal(jax.random.key(seed), shape), names)


def test_nx_fft_is_the_function_and_the_module_is_namax_ops_fft():
    import namax.ops.fft as fft_module
    import namax.ops.poly as poly_module

    assert callable(nx.fft) and nx.fft is fft_module.fft and nx.poly is poly_module.poly
    for name in ["fft", "ifft", "rfft", "irfft", "hfft", "ihfft", "fftfreq", "rfftfreq", "fftshift", "ifftshift"]:
        assert name in nx.__all__ and getattr(nx, name) is getattr(fft_module, name)
    assert list(inspect.signature(nx.rfft).parameters) == ["a", "axis", "norm"]
    assert list(inspect.signature(nx.fftshift).parameters) == ["x", "axes"]


# (transform, axis, output axes, jnp reference on the (x:4, y:6) array)
FFT_CASES = [
    ("fft", None, (X, Y), lambda r, n: jnp.fft.fft(r, axis=1, norm=n)),
    ("fft", "x", (X, Y), lambda r, n: jnp.fft.fft(r, axis=0, norm=n)),
    ("fft", Axis("y", 9), (X, Axis("y", 9)), lambda r, n: jnp.fft.fft(r, n=9, axis=1, norm=n)),
    ("fft", ["y", X], (X, Y), lambda r, n: jnp.fft.fftn(r, s=(6, 4), axes=(1, 0), norm=n)),
    ("fft", {"y": Axis("freq", 3), "x": 5}, (Axis("x", 5), Axis("freq", 3)),
     lambda r, n: jnp.fft.fftn(r, s=(3, 5), axes=(1, 0), norm=n)),
    ("ifft", {"x": None}, (X, Y), lambda r, n: jnp.fft.ifft(r, axis=0, norm=n)),
    ("ifft", ("x", "y"), (X, Y), lambda r, n: jnp.fft.ifftn(r, axes=(0, 1), norm=n)),
    ("rfft", "y", (X, Axis("y", 4)), lambda r, n: jnp.fft.rfft(r, axis=1, norm=n)),
    ("rfft", Axis("x", 7), (Axis("x", 4), Y), lambda r, n: jnp.fft.rfft(r, n=7, axis=0, norm=n)),
    ("rfft", ["y", "x"], (Axis("x", 3), Y), lambda r, n: jnp.fft.rfftn(r, axes=(1, 0), norm=n)),
    ("rfft", {"x": 2, "y": Axis("freq", 8)}, (Axis("x", 2), Axis("freq", 5)),
     lambda r, n: jnp.fft.rfftn(r, s=(2, 8), axes=(0, 1), norm=n)),
    ("irfft", None, (X, Axis("y", 10)), lambda r, n: jnp.fft.irfft(r, axis=1, norm=n)),
    ("irfft", Axis("x", 5), (Axis("x", 5), Y), lambda r, n: jnp.fft.irfft(r, n=5, axis=0, norm=n)),
    ("irfft", ["y", "x"], (Axis("x", 6), Y), lambda r, n: jnp.fft.irfftn(r, s=(6, 6), axes=(1, 0), norm=n)),
    ("irfft", {"x": None, "y": 7}, (X, Axis("y", 7)), lambda r, n: jnp.fft.irfftn(r, s=(4, 7), axes=(0, 1), norm=n)),
    ("hfft", "y", (X, Axis("y", 10)), lambda r, n: jnp.fft.hfft(r, axis=1, norm=n)),
    ("hfft", {"x": Axis("t", 3)}, (Axis("t", 3), Y), lambda r, n: jnp.fft.hfft(r, n=3, axis=0, norm=n)),
    ("ihfft", "y", (X, Axis("y", 4)), lambda r, n: jnp.fft.ihfft(r, axis=1, norm=n)),
    ("ihfft", {"x": 7}, (Axis("x", 4), Y), lambda r, n: jnp.fft.ihfft(r, n=7, axis=0, norm=n)),
    ("ihfft", [Y], (X, Axis("y", 4)), lambda r, n: jnp.fft.ihfft(r, axis=1, norm=n)),
]


@pytest.mark.parametrize("norm", [None, "ortho", "forward"])
@pytest.mark.parametrize("case", FFT_CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_transforms_match_jnp_fft(case, norm):
    name, axis, out_axes, reference = case
    x = real_signal() if name in ("rfft", "ihfft") else complex_signal()
    y = getattr(nx, name)(x, axis, norm=norm)
    assert y.axes == out_axes
    expected = reference(x.array, norm)
    assert y.dtype == expected.dtype
    np.testing.assert_allclose(y.array, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", FFT_CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_transforms_follow_names_not_positions(case):
    name, axis, out_axes, _ = case
    if axis is None:
        return  # None means "the last axis": a position by definition
    x = real_signal() if name in ("rfft", "ihfft") else complex_signal()
    transposed = x.rearrange(("y", "x"))
    y = jax.jit(lambda v: getattr(nx, name)(v, axis))(transposed)
    assert set(y.axes) == set(out_axes)
    np.testing.assert_allclose(y.rearrange(out_axes).array, getattr(nx, name)(x, axis).array, rtol=1e-5, atol=1e-5)


@settings(max_examples=8)
@given(
    sizes=st.lists(st.integers(1, 5), min_size=2, max_size=3),
    name=st.sampled_from(["fft", "ifft", "rfft", "irfft"]),
    lengths=st.lists(st.one_of(st.none(), st.integers(1, 7)), min_size=1, max_size=2),
)
def test_dict_axis_matches_jnp_nd_transforms(sizes, name, lengths):
    names = ("a", "b", "c")[: len(sizes)]
    lengths = lengths[: len(sizes)]
    x = complex_signal(tuple(sizes), names, seed=len(sizes)) if name != "rfft" else real_signal(tuple(sizes), names)
    picked = list(range(len(sizes)))[::-1][: len(lengths)]  # transform the trailing axes, last one first
    request = {names[i]: n for i, n in zip(picked, lengths)}
    last_size = sizes[picked[-1]]
    if name == "irfft" and lengths[-1] is None and last_size == 1:
        with pytest.raises(ValueError, match="default output length 2 \\* \\(1 - 1\\) is 0"):
            nx.irfft(x, request)
        return
    s = [n if n is not None else sizes[i] for i, n in zip(picked, lengths)]
    if name == "irfft" and lengths[-1] is None:
        s[-1] = 2 * (last_size - 1)
    y = getattr(nx, name)(x, request)
    expected = getattr(jnp.fft, name + "n")(x.array, s=s, axes=picked)
    assert y.axis_names == names
    assert tuple(ax.size for ax in y.axes) == expected.shape
    np.testing.assert_allclose(y.array, expected, rtol=1e-4, atol=1e-4)


def test_gradient_of_an_fft_loss_matches_jnp():
    x = real_signal((3, 8), ("batch", "time"), seed=3)
    w = jax.random.uniform(jax.random.key(4), (3, 5))

    def named_loss(raw):
        spectrum = nx.rfft(nx.named(raw, ("batch", "time")), "time", norm="ortho")
        power = nx.abs(spectrum) ** 2 * nx.named(w, ("batch", "time"))
        back = nx.irfft(spectrum, {"time": 8})
        return nx.sum(power).array + nx.sum(back * back).array

    def plain_loss(raw):
        spectrum = jnp.fft.rfft(raw, axis=1, norm="ortho")
        back = jnp.fft.irfft(spectrum, n=8, axis=1)
        return jnp.sum(jnp.abs(spectrum) ** 2 * w) + jnp.sum(back * back)

    np.testing.assert_allclose(jax.grad(named_loss)(x.array), jax.grad(plain_loss)(x.array), rtol=1e-5, atol=1e-5)
    # the same gradient with the signal laid out time-first
    grad_t = jax.grad(lambda raw: named_loss(raw.T))(x.array.T)
    np.testing.assert_allclose(grad_t.T, jax.grad(plain_loss)(x.array), rtol=1e-5, atol=1e-5)


def test_shifts_and_frequencies_match_jnp():
    x = real_signal((5, 6), ("x", "y"))
    np.testing.assert_array_equal(nx.fftshift(x).array, jnp.fft.fftshift(x.array))
    np.testing.assert_array_equal(nx.fftshift(x, "x").array, jnp.fft.fftshift(x.array, axes=0))
    np.testing.assert_array_equal(nx.ifftshift(x, ("y", Axis("x", 5))).array, jnp.fft.ifftshift(x.array, axes=(1, 0)))
    t = nx.ifftshift(x.rearrange(("y", "x")), "x")
    assert t.axes == (Axis("y", 6), Axis("x", 5))
    np.testing.assert_array_equal(t.array, jnp.fft.ifftshift(x.array, axes=0).T)
    for n, d in [(7, 1.0), (8, 0.1)]:
        f = nx.fftfreq(Axis("time", n), d)
        assert f.axes == (Axis("time", n),)
        np.testing.assert_array_equal(f.array, jnp.fft.fftfreq(n, d))
        r = nx.rfftfreq(Axis("time", n), d=d)
        assert r.axes == (Axis("time", n // 2 + 1),)
        np.testing.assert_array_equal(r.array, jnp.fft.rfftfreq(n, d))
    assert tagged_names(lambda v: nx.rfft(v, "y").array, x)[-1] == ("x", "y")


def test_fft_errors():
    x = complex_signal()
    with pytest.raises(ValueError, match=r"Axis 'z' not found in array with axes \(x:4, y:6\)"):
        nx.fft(x, "z")
    with pytest.raises(ValueError, match="Axis 'z' not found"):
        nx.rfft(real_signal(), {"y": None, "z": 3})
    with pytest.raises(ValueError, match="fft: the length for axis 'y' must be >= 1, got 0"):
        nx.fft(x, Axis("y", 0))
    with pytest.raises(ValueError, match="ifft: the length for axis 'x' must be >= 1, got -2"):
        nx.ifft(x, {"x": -2})
    with pytest.raises(TypeError, match="fft: the length for axis 'x' must be an int, None or an Axis, got 2.5"):
        nx.fft(x, {"x": 2.5})
    with pytest.raises(TypeError, match="must be an int, None or an Axis, got True"):
        nx.fft(x, {"x": True})
    with pytest.raises(ValueError, match=r"fft: axis 'y' has size 6 in the array \(x:4, y:6\) but 8 as a listed axis"):
        nx.fft(x, ["x", Axis("y", 8)])
    with pytest.raises(ValueError, match="fft: an axis is listed twice"):
        nx.fft(x, ["y", Axis("y", 6)])
    with pytest.raises(ValueError, match="hfft transforms a single axis; got 2"):
        nx.hfft(x, {"x": None, "y": None})
    with pytest.raises(ValueError, match="fft: renaming gives two axes named 'x'"):
        nx.fft(x, {"y": Axis("x", 6)})
    with pytest.raises(ValueError, match=r"irfft: axis 'y' has size 1, so the default output length 2 \* \(1 - 1\) is 0"):
        nx.irfft(complex_signal((4, 1)), "y")
    with pytest.raises(ValueError, match="ifft: axis 'x' has size 0; there is nothing to transform"):
        nx.ifft(complex_signal((0, 6)), "x")
    with pytest.raises(ValueError, match="fft: no axis to transform"):
        nx.fft(x, {})
    with pytest.raises(TypeError, match="rfft: expected a NamedArray, got ArrayImpl; use jnp.fft.rfft"):
        nx.rfft(jnp.ones(4))
    with pytest.raises(TypeError, match="fft: axis must be None, a name, an Axis"):
        nx.fft(x, 1)
    with pytest.raises(TypeError, match="fftfreq: axis must be an Axis"):
        nx.fftfreq("time")
    with pytest.raises(ValueError, match="fftshift: an axis is listed twice"):
        nx.fftshift(x, ("x", "x"))
    with pytest.raises(ValueError, match="Axis 'q' not found"):
        nx.ifftshift(x, "q")


# --- poly -----------------------------------------------------------------------------------
C, K = Axis("coef", 4), Axis("k", 2)
P_RAW = jnp.array([2.0, -1.0, 0.5, 3.0])
Q_RAW = jnp.array([1.0, -2.0])


@pytest.mark.parametrize("name", ["polyadd", "polysub", "polymul"])
def test_binary_poly_ops_match_jnp_and_name_the_coefficient_axis(name):
    p, q = nx.named(P_RAW, C), nx.named(Q_RAW, K)
    fn, reference = getattr(nx, name), getattr(jnp, name)
    for a, b, axis_name in [(p, q, "coef"), (q, p, "k"), (P_RAW, q, "k"), (p, Q_RAW, "coef"),
                            (P_RAW, Q_RAW, nx.DEFAULT_POLY_AXIS_NAME)]:
        out = fn(a, b)
        expected = reference(getattr(a, "array", a), getattr(b, "array", b))
        assert out.axes == (Axis(axis_name, expected.shape[0]),)
        np.testing.assert_allclose(out.array, expected, rtol=1e-6)
    assert nx.DEFAULT_POLY_AXIS_NAME == "degree"


@settings(max_examples=10)
@given(a=st.lists(st.integers(-5, 5), min_size=1, max_size=6), b=st.lists(st.integers(-5, 5), min_size=1, max_size=6))
def test_poly_products_and_sums_for_any_lengths(a, b):
    pa, pb = nx.named(jnp.array(a, jnp.float32), "p"), nx.named(jnp.array(b, jnp.float32), "q")
    np.testing.assert_allclose(nx.polymul(pa, pb).array, jnp.polymul(pa.array, pb.array), atol=1e-4)
    np.testing.assert_allclose(nx.polyadd(pa, pb).array, np.polyadd(a, b), atol=1e-4)  # no trimming in a sum
    assert nx.polyadd(pb, pa).axes == (Axis("q", max(len(a), len(b))),)


def test_unary_poly_ops_match_jnp():
    p = nx.named(P_RAW, C)
    d = nx.polyder(p, 2)
    assert d.axes == (Axis("coef", 2),)
    np.testing.assert_allclose(d.array, jnp.polyder(P_RAW, 2))
    i = nx.polyint(p, m=2, k=nx.named(jnp.array([1.0, 2.0]), "const"))
    assert i.axes == (Axis("coef", 6),)
    np.testing.assert_allclose(i.array, jnp.polyint(P_RAW, 2, jnp.array([1.0, 2.0])), rtol=1e-6)
    np.testing.assert_allclose(nx.polyint(P_RAW, 1, 3.0).array, jnp.polyint(P_RAW, 1, 3.0), rtol=1e-6)
    z = nx.named(jnp.array([0.5, -1.0, 2.0]), "root")
    pz = nx.poly(z)
    assert pz.axes == (Axis("root", 4),)
    np.testing.assert_allclose(pz.array, jnp.poly(z.array), rtol=1e-6)
    assert nx.poly(jnp.array([1.0])).axes == (Axis("degree", 2),)
    r = nx.roots(nx.named(jnp.array([1.0, -6.0, 11.0, -6.0]), "coef"))
    assert r.axes == (Axis("coef", 3),)
    np.testing.assert_allclose(np.sort(r.array.real), np.sort(jnp.roots(jnp.array([1.0, -6.0, 11.0, -6.0])).real),
                               rtol=1e-4)
    padded = nx.named(jnp.array([0.0, 0.0, 1.0, 2.0, 0.0]), "coef")
    for trim in ["fb", "f", "b"]:
        t = nx.trim_zeros(padded, trim)
        expected = jnp.trim_zeros(padded.array, trim)
        assert t.axes == (Axis("coef", expected.shape[0]),)
        np.testing.assert_array_equal(t.array, expected)
    q, rem = nx.polydiv(p, nx.named(Q_RAW, K))
    eq, er = jnp.polydiv(P_RAW, Q_RAW)
    assert q.axes == (Axis("coef", eq.shape[0]),) and rem.axes == (Axis("coef", er.shape[0]),)
    np.testing.assert_allclose(q.array, eq, rtol=1e-6)
    np.testing.assert_allclose(rem.array, er, atol=1e-6)


def test_polyval_keeps_the_axes_of_x_and_differentiates():
    p = nx.named(P_RAW, C)
    xs = nx.named(jnp.linspace(-1, 1, 6).reshape(2, 3), ("u", "v"))
    y = nx.polyval(p, xs)
    assert y.axes == xs.axes
    np.testing.assert_allclose(y.array, jnp.polyval(P_RAW, xs.array), rtol=1e-6)
    np.testing.assert_allclose(nx.polyval(p, xs.rearrange(("v", "u"))).rearrange(("u", "v")).array, y.array)
    plain = nx.polyval(p, 1.5)
    assert not isinstance(plain, nx.NamedArray)
    np.testing.assert_allclose(plain, jnp.polyval(P_RAW, 1.5), rtol=1e-6)
    g = jax.grad(lambda c: nx.sum(nx.polyval(nx.named(c, C), xs)).array)(P_RAW)
    np.testing.assert_allclose(g, jax.grad(lambda c: jnp.sum(jnp.polyval(c, xs.array)))(P_RAW), rtol=1e-6)


def test_polyfit_matches_jnp_and_names_its_outputs():
    n = Axis("sample", 9)
    x = nx.linspace(n, start=-1.0, stop=2.0)
    y = nx.sin(x) * 3 + x
    w = nx.linspace(n, start=1.0, stop=2.0)
    c = nx.polyfit(x, y, 3)
    assert c.axes == (Axis("sample", 4),)
    np.testing.assert_allclose(c.array, jnp.polyfit(x.array, y.array, 3), rtol=1e-5)
    cw = nx.polyfit(x.array, y, 3, w=w)
    np.testing.assert_allclose(cw.array, jnp.polyfit(x.array, y.array, 3, w=w.array), rtol=1e-5)
    coef, cov = nx.polyfit(x, y, 3, cov=True)
    ec, ecov = jnp.polyfit(x.array, y.array, 3, cov=True)
    assert cov.axes == (Axis("sample", 4), Axis("sample_cov", 4))
    np.testing.assert_allclose(cov.array, ecov, rtol=1e-4)
    full = nx.polyfit(x, y, 3, full=True)
    expected = jnp.polyfit(x.array, y.array, 3, full=True)
    assert len(full) == 5 and full[0].axes == (Axis("sample", 4),)
    for got, want in zip((full[0].array, *full[1:]), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4)
    assert nx.polyfit(x.array, y.array, 3).axes == (Axis("degree", 4),)


def test_vander_matches_jnp():
    x = nx.named(jnp.array([1.0, 2.0, 3.0]), "x")
    v = nx.vander(x, "power")
    assert v.axes == (Axis("x", 3), Axis("power", 3))
    np.testing.assert_array_equal(v.array, jnp.vander(x.array))
    v5 = nx.vander(x, Axis("power", 5))
    np.testing.assert_array_equal(v5.array, jnp.vander(x.array, 5))


def test_poly_errors():
    two_d = nx.ones((Axis("a", 2), Axis("b", 3)))
    with pytest.raises(ValueError, match=r"polyadd: p2 must have exactly one axis \(the coefficients\), got axes \(a:2, b:3\)"):
        nx.polyadd(nx.named(P_RAW, C), two_d)
    with pytest.raises(ValueError, match=r"polymul: p1 must be 1-D coefficients, got an array of shape \(2, 2\)"):
        nx.polymul(jnp.ones((2, 2)), Q_RAW)
    with pytest.raises(ValueError, match="polyval: p must have exactly one axis"):
        nx.polyval(two_d, 1.0)
    with pytest.raises(TypeError, match="polyder.*missing a required argument: 'p'"):
        nx.polyder()
    x = nx.named(jnp.arange(5.0), "sample")
    with pytest.raises(ValueError, match=r"polyfit: y lies along Axis\('other', 5\) but the samples lie along Axis\('sample', 5\)"):
        nx.polyfit(x, nx.named(jnp.arange(5.0), "other"), 1)
    with pytest.raises(ValueError, match="polyfit: x has 5 samples but y has 4"):
        nx.polyfit(x, jnp.arange(4.0), 1)
    with pytest.raises(ValueError, match="polyfit: deg must be a non-negative int, got -1"):
        nx.polyfit(x, x, -1)
    with pytest.raises(ValueError, match="polyfit: w has 3 weights for 5 samples"):
        nx.polyfit(x.array, x.array, 1, w=jnp.ones(3))
    with pytest.raises(ValueError, match="vander: the degree axis 'sample' has the same name"):
        nx.vander(x, "sample")
    with pytest.raises(ValueError, match=r"vander: x must have exactly one axis, got axes \(a:2, b:3\)"):
        nx.vander(two_d, "d")
    with pytest.raises(TypeError, match="vander: x must be a NamedArray"):
        nx.vander(jnp.ones(3), "d")
