"""The int4 CPU kernel (namax.quant.int4_kernel, csrc/int4_matmul.cc): values, gradients, vmap, where it is used.

The kernel is optional (the pure-XLA "scan" form is the fallback), but on x86-64 Linux with a
C++ compiler the install must have built it: ``test_kernel_built`` fails otherwise, unless
``NAMAX_INT4_KERNEL=0`` disables it on purpose.
"""

import functools
import os
import platform
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import namax.quant as qax
from namax.quant import int4_dot, int4_kernel
from namax.quant.int4 import quantize_array

needs_kernel = pytest.mark.skipif(not int4_kernel.available(), reason=f"int4 kernel: {int4_kernel.status()}")


def _close(got, want, rtol=1e-5):
    """Equal to f32 rounding, relative to the output's scale."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    scale = max(float(np.max(np.abs(want))), 1e-30)
    np.testing.assert_allclose(got / scale, want / scale, rtol=0, atol=rtol * 10)


def _uses_kernel(fn, *args) -> bool:
    return int4_kernel.TARGET in jax.jit(fn).lower(*args).as_text()


def _weight(k, n, group_size=128, symmetric=True, scale_dtype=jnp.bfloat16, stack=(), seed=0):
    w = np.random.default_rng(seed).normal(size=stack + (k, n)).astype(np.float32) / np.sqrt(k)
    quantize = functools.partial(quantize_array, group_size=group_size, symmetric=symmetric, in_axis=len(stack),
                                 scale_dtype=scale_dtype, stack_dims=len(stack), nonfinite="zero")
    return jax.jit(quantize)(w)


def _x(shape):
    return jnp.asarray(np.random.default_rng(1).normal(size=shape).astype(np.float32))


@jax.jit
def _dense(w):
    return w.materialize()


def test_kernel_built():
    if os.environ.get("NAMAX_INT4_KERNEL", "1") == "0":
        pytest.skip("disabled by NAMAX_INT4_KERNEL=0")
    if os.environ.get("TEST_SRCDIR"):
        pytest.skip("under Bazel: BUILD has no target for the kernel (pip install builds it)")
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64") or not compiler:
        pytest.skip("the kernel build is only required on x86-64 Linux with a C++ compiler")
    assert int4_kernel.available(), int4_kernel.status()
    assert int4_kernel.isa() in ("avx512", "avx2", "generic")
    if jax.default_backend() == "cpu":
        assert int4_dot.form() == "kernel"


@needs_kernel
@pytest.mark.parametrize("k,n,m,symmetric,group_size,scale_dtype", [
    (256, 8, 1, True, 128, jnp.bfloat16),
    (512, 256, 16, True, 128, jnp.bfloat16),
    (512, 300, 3, False, 64, jnp.bfloat16),
    (384, 1000, 7, False, 128, jnp.float32),
    (128, 34, 11, True, 32, jnp.float32),
    (1024, 130, 16, False, 128, jnp.bfloat16),
])
def test_values_match_materialized(k, n, m, symmetric, group_size, scale_dtype):
    w = _weight(k, n, group_size, symmetric, scale_dtype)
    x = _x((m, k))
    f = qax.use_implicit_args(lambda x, w: x @ w)
    assert _uses_kernel(f, x, w)
    _close(jax.jit(f)(x, w), x @ _dense(w))
    _close(int4_kernel.matmul(x, w.packed, w.scales, w.zero_points, group_size), x @ _dense(w))


@needs_kernel
@pytest.mark.parametrize("isa", ["avx2", "generic"])
def test_lower_instruction_sets(isa):
    w = _weight(256, 98, 64, symmetric=False)
    x = _x((5, 256))
    try:
        int4_kernel.set_isa(isa)
        got = int4_kernel.matmul(x, w.packed, w.scales, w.zero_points, 64)
    finally:
        int4_kernel.set_isa("")
    _close(got, x @ _dense(w))


@needs_kernel
def test_free_dims_transposed_weight_and_stack():
    w = _weight(256, 64, stack=(3,), symmetric=False)
    x = _x((3, 2, 5, 256))
    f = qax.use_implicit_args(lambda x, w: jnp.einsum("lbsk,lkn->lbsn", x, w))
    assert _uses_kernel(f, x, w)
    _close(jax.jit(f)(x, w), jnp.einsum("lbsk,lkn->lbsn", x, _dense(w)))
    # a scan over the stack slices one layer per step: 2-D kernel calls
    body = lambda h, wl: (jnp.tanh(h @ wl), None)  # noqa: E731
    g = qax.use_implicit_args(lambda x, w: jax.lax.scan(body, x, w)[0])
    wq = _weight(64, 64, group_size=32, stack=(3,))
    h0 = _x((4, 64))
    assert _uses_kernel(g, h0, wq)
    dense = jax.lax.scan(body, h0, _dense(wq))[0]
    _close(jax.jit(g)(h0, wq), dense, rtol=1e-4)


@needs_kernel
def test_gradient_wrt_x():
    w = _weight(256, 96, symmetric=False)
    x = _x((4, 256))
    loss = qax.use_implicit_args(lambda x, w: jnp.sum(jnp.sin(x @ w)))
    assert _uses_kernel(loss, x, w)
    dense = jax.grad(lambda x: jnp.sum(jnp.sin(x @ _dense(w))))(x)
    _close(jax.jit(jax.grad(loss))(x, w), dense)
    g = jax.grad(lambda x: jnp.sum(jnp.sin(int4_kernel.matmul(x, w.packed, w.scales, w.zero_points, 128))))(x)
    _close(g, dense)


@needs_kernel
def test_vmap():
    w = _weight(256, 64)
    xs = _x((3, 2, 256))
    f = qax.use_implicit_args(lambda x, w: x @ w)
    got = jax.jit(jax.vmap(f, in_axes=(0, None)))(xs, w)
    _close(got, xs @ _dense(w))
    # vmap over the weights (x broadcast) and over both
    ws = _weight(256, 64, stack=(3,), symmetric=False)
    call = lambda x, p, s, z: int4_kernel.matmul(x, p, s, z, 128)  # noqa: E731
    _close(jax.vmap(call, in_axes=(None, 0, 0, 0))(xs[0], ws.packed, ws.scales, ws.zero_points),
           xs[0] @ _dense(ws))
    _close(jax.vmap(call)(xs, ws.packed, ws.scales, ws.zero_points), xs @ _dense(ws))


@needs_kernel
def test_fallbacks_where_the_kernel_does_not_apply():
    w = _weight(256, 64)
    f = qax.use_implicit_args(lambda x, w: x @ w)
    big = jnp.ones((int4_dot.KERNEL_MAX_ROWS + 1, 256))
    assert not _uses_kernel(f, big, w)
    _close(jax.jit(f)(big, w), big @ _dense(w))
    # weight on the left, contracting its out dim: the scan form
    x = _x((3, 64))
    g = qax.use_implicit_args(lambda x, w: x @ w.T)
    assert not _uses_kernel(g, x, w)
    _close(jax.jit(g)(x, w), x @ _dense(w).T)
    # a bf16 weight (dequantised into bf16): the scan form
    xb = _x((2, 256)).astype(jnp.bfloat16)
    h = qax.use_implicit_args(lambda x, w: x @ w.astype(jnp.bfloat16))
    assert not _uses_kernel(h, xb, w)
    # inside a mesh context: XLA would not partition the custom call
    mesh = jax.make_mesh((1,), ("data",))
    with jax.set_mesh(mesh):
        assert not _uses_kernel(f, jnp.ones((3, 256)), w)
    # DOT_FORM="scan" turns it off
    old = int4_dot.DOT_FORM
    try:
        int4_dot.DOT_FORM = "scan"
        assert not _uses_kernel(f, big[:2], w)
    finally:
        int4_dot.DOT_FORM = old


@needs_kernel
@pytest.mark.skipif(jax.device_count() < 2, reason="needs 2 devices")
def test_inside_shard_map_values_and_gradient():
    """Inside shard_map each device runs its own dot: the kernel applies, typed as varying."""
    from jax.sharding import PartitionSpec as P

    w = _weight(256, 64)
    x = _x((4, 256))
    mesh = jax.make_mesh((2,), ("d",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:2])
    loss = lambda x, w: jnp.sum(jnp.sin(x @ w))  # noqa: E731
    f = jax.jit(jax.shard_map(qax.use_implicit_args(lambda x, w: x @ w), mesh=mesh, in_specs=(P("d"), P()),
                              out_specs=P("d")))
    assert int4_kernel.TARGET in f.lower(x, w).as_text()
    _close(f(x, w), x @ _dense(w))
    g = jax.jit(jax.shard_map(jax.grad(qax.use_implicit_args(loss)), mesh=mesh, in_specs=(P("d"), P()),
                              out_specs=P("d")))
    _close(g(x, w), jax.grad(lambda x: loss(x, _dense(w)))(x))


@needs_kernel
def test_temp_memory_below_half_the_dense_weight():
    d = 1024
    w = _weight(d, d)
    x = jnp.ones((16, d))
    f = qax.use_implicit_args(lambda x, w: x @ w)
    assert _uses_kernel(f, x, w)
    stats = jax.jit(f).lower(x, w).compile().memory_analysis()
    assert stats.temp_size_in_bytes < 0.5 * 4 * d * d


def test_env_switch_disables_the_kernel():
    code = ("import namax.quant.int4_kernel as k, namax.quant.int4_dot as d; "
            "assert not k.available() and 'NAMAX_INT4_KERNEL=0' in k.status(), k.status(); "
            "assert d.form() == 'scan'")
    env = dict(os.environ, NAMAX_INT4_KERNEL="0", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
