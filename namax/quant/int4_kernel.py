"""A CPU kernel for int4 weight dots, through JAX's FFI: ``x @ dequant(W)`` without a dense ``W``.

XLA:CPU never fuses a convert into a dot, so the pure-XLA form (:mod:`namax.quant.int4_dot`'s
``"scan"``) converts the codes into f32 tiles chunk by chunk. This kernel (``csrc/int4_matmul.cc``,
built into ``namax/quant/_int4_kernel*.so`` by ``pip install``) reads the packed codes once and
accumulates ``sum_k x_k q_k`` per scale group in registers, then adds ``s * (sum - z sum_k x_k)``:
the result equals ``x @ w.materialize()`` to f32 rounding (no activation is quantised).
It picks AVX-512, AVX2+FMA or a portable loop at run time and shares the columns of the
result between the calling thread and XLA's intra-op thread pool.

:func:`available` says whether the library was built and registered (:func:`status` says
why not); ``NAMAX_INT4_KERNEL=0`` in the environment disables it. :func:`matmul` is the
JAX-level call: ``x [*b, M, K]`` against codes ``[*b, K, N/2]``, differentiable with respect
to ``x`` (the weight is frozen; the gradient is the pure-XLA form's) and batchable with
``vmap`` over any of its arguments (the custom call broadcasts batch dims of size 1).
Settings for tests and measurements: :func:`set_isa`, :func:`set_threads`; in the
environment ``NAMAX_INT4_ISA`` (``avx2``, ``generic``: a lower instruction set) and
``NAMAX_INT4_KERNEL_PATH`` (load another build).
A custom call is not partitioned by XLA's SPMD partitioner, so
:mod:`~namax.quant.int4_dot` only uses it outside a mesh context.

>>> import jax, jax.numpy as jnp
>>> from namax.quant.int4 import quantize_array
>>> w = quantize_array(jax.random.normal(jax.random.key(0), (256, 8)))
>>> x = jnp.ones((2, 256))
>>> y = matmul(x, w.packed, w.scales, w.zero_points, w.group_size) if available() else x @ w.materialize()
>>> bool(jnp.allclose(y, x @ w.materialize(), rtol=1e-5, atol=1e-4))
True
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

TARGET = "namax_int4_matmul"
"""The FFI target name the kernel is registered under (platform ``cpu``)."""

_HERE = os.path.dirname(os.path.abspath(__file__))
_state: Optional[tuple[bool, str, Any]] = None  # (available, status, ctypes library)


def library_path() -> Optional[str]:
    """The built kernel library inside the package (``_int4_kernel*.so``), or None.

    ``NAMAX_INT4_KERNEL_PATH`` in the environment names another build to load (development)."""
    override = os.environ.get("NAMAX_INT4_KERNEL_PATH")
    if override:
        return override if os.path.exists(override) else None
    found = sorted(glob.glob(os.path.join(_HERE, "_int4_kernel*.so")))
    return found[0] if found else None


def _load() -> tuple[bool, str, Any]:
    global _state
    if _state is not None:
        return _state
    if os.environ.get("NAMAX_INT4_KERNEL", "1").strip().lower() in ("0", "false", "no", "off"):
        _state = (False, "disabled by NAMAX_INT4_KERNEL=0", None)
        return _state
    path = library_path()
    if path is None:
        _state = (False, f"no _int4_kernel*.so in {_HERE} (not built: reinstall with a C++ compiler, "
                         f"`pip install -e .`, to build csrc/int4_matmul.cc)", None)
        return _state
    try:
        lib = ctypes.CDLL(path)
        lib.namax_int4_isa.restype = ctypes.c_char_p
        lib.namax_int4_set_isa.restype = ctypes.c_char_p
        lib.namax_int4_set_isa.argtypes = [ctypes.c_char_p]
        lib.namax_int4_set_threads.argtypes = [ctypes.c_int]
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.NamaxInt4Matmul), platform="cpu")
    except Exception as e:  # a stale or foreign build: fall back to the pure-XLA form
        _state = (False, f"could not load {path}: {type(e).__name__}: {e}", None)
        return _state
    _state = (True, f"loaded {os.path.basename(path)} ({lib.namax_int4_isa().decode()})", lib)
    return _state


def available() -> bool:
    """Whether the kernel library is built, loaded and registered with XLA (for the cpu platform)."""
    return _load()[0]


def status() -> str:
    """Why the kernel is or is not available, e.g. ``'loaded _int4_kernel....so (avx512)'``."""
    return _load()[1]


def isa() -> Optional[str]:
    """The instruction set the kernel runs (``"avx512"``, ``"avx2"`` or ``"generic"``), None if unavailable."""
    ok, _, lib = _load()
    return lib.namax_int4_isa().decode() if ok else None


def set_isa(name: str) -> Optional[str]:
    """Use at most the instruction set ``name`` (``"avx512"``, ``"avx2"``, ``"generic"``, or ``""``
    for the best; for tests and measurements); returns the one in use. Affects later calls."""
    ok, _, lib = _load()
    return lib.namax_int4_set_isa(name.encode()).decode() if ok else None


def set_threads(n: int) -> Optional[int]:
    """Use at most ``n`` threads per call (0: all of XLA's intra-op pool; for measurements)."""
    ok, _, lib = _load()
    return lib.namax_int4_set_threads(int(n)) if ok else None


def pool_threads() -> Optional[int]:
    """The size of XLA's intra-op thread pool as the last kernel call saw it (-1 before any call)."""
    ok, _, lib = _load()
    return lib.namax_int4_pool_threads() if ok else None


_names_rule_done = False


def _register_names_rule() -> None:
    """Teach namax's names pass (:mod:`namax.passes.names`) this custom call: the output is x's
    dims with the contracted dim replaced by the weight's out dim (which the scales carry)."""
    global _names_rule_done
    if _names_rule_done:
        return
    _names_rule_done = True
    from namax.passes import names

    previous = names.RULES.get("ffi_call")

    def rule(it: Any, eqn: Any, ins: list) -> list:
        if eqn.params.get("target_name") != TARGET:
            return previous(it, eqn, ins) if previous is not None else it._unknown(eqn, ins)
        x, packed, scales = ins[0], ins[1], ins[2]
        it.unify(x[-1], packed[-2])
        for d in range(len(x) - 2):
            it.unify(x[d], packed[d])
        out_shape = eqn.outvars[0].aval.shape
        x_shape = eqn.invars[0].aval.shape
        lead = tuple(x[d] if x_shape[d] == out_shape[d] else packed[d] for d in range(len(x) - 2))
        return [lead + (x[-2], scales[-1])]

    names.RULES["ffi_call"] = rule


def _ffi(x: jax.Array, packed: jax.Array, scales: jax.Array, zeros: Optional[jax.Array], group_size: int) -> jax.Array:
    """The raw custom call: f32 ``x [*b, M, K]`` (same rank as ``packed``) -> f32 ``[*b', M, N]``."""
    _register_names_rule()
    lead = jnp.broadcast_shapes(x.shape[:-2], packed.shape[:-2])
    out = jax.ShapeDtypeStruct(lead + (x.shape[-2], 2 * packed.shape[-1]), jnp.float32)
    if scales.dtype not in (jnp.bfloat16, jnp.float32):
        scales = scales.astype(jnp.float32)
    asym = zeros is not None
    if not asym:
        zeros = jnp.zeros((1,) * packed.ndim, jnp.uint8)
    call = jax.ffi.ffi_call(TARGET, out, vmap_method="expand_dims")
    y = call(x, packed, scales, zeros, group_size=np.int64(group_size), asymmetric=np.int64(asym))
    return _varying_like(y, x, packed, scales, zeros)


def _vma(a: Any) -> frozenset:
    """The mesh axes ``a`` varies over inside ``shard_map`` (empty outside)."""
    aval = jax.typeof(a)
    manual = getattr(aval, "manual_axis_type", None)
    return frozenset(getattr(manual, "varying", None) or getattr(aval, "vma", None) or ())


def _varying_like(y: jax.Array, *inputs: Any) -> jax.Array:
    """``y`` typed as varying over every mesh axis (inside ``shard_map``) that an input varies over:
    a custom call's result type carries none."""
    missing = tuple(sorted(frozenset().union(*(_vma(a) for a in inputs)) - _vma(y)))
    return jax.lax.pcast(y, missing, to="varying") if missing else y


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _matmul(x, packed, scales, zeros, group_size):
    return _ffi(x, packed, scales, zeros, group_size)


def _matmul_fwd(x, packed, scales, zeros, group_size):
    return _ffi(x, packed, scales, zeros, group_size), (x, packed, scales, zeros)


def _matmul_bwd(group_size, res, dy):
    """``dx = dy @ dequant(W).T`` through the pure-XLA form; the weight gets no gradient (frozen)."""
    x, packed, scales, zeros = res
    from .int4 import Int4Weight
    from .int4_dot import _scan_dot

    w = Int4Weight(packed, scales, zeros, group_size=group_size)
    L = w.n_stack
    dn = (((dy.ndim - 1,), (L + 1,)), (tuple(range(L)), tuple(range(L))))
    dx = _scan_dot(dy, w, dn, {"precision": None, "preferred_element_type": jnp.float32}).astype(x.dtype)
    dx = _varying_like(dx, x)
    float0 = lambda a: np.zeros(a.shape, jax.dtypes.float0)  # noqa: E731
    return dx, float0(packed), jnp.zeros_like(scales), None if zeros is None else float0(zeros)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def matmul(x: Any, packed: Any, scales: Any, zeros: Optional[Any], group_size: int) -> jax.Array:
    """``x @ W`` for W given as int4 codes ``[*b, K, N/2]``, scales ``[*b, K/group_size, N]`` and
    optional zero points ``[*b, K/group_size, N/2]`` (:class:`~namax.quant.int4.Int4Weight`'s
    storage), x ``[*b, M, K]`` (the same batch dims as the weight): float32 ``[*b, M, N]``.

    Needs :func:`available`. x is computed in float32 (other float dtypes are converted).
    """
    if not available():
        raise RuntimeError(f"namax int4 kernel unavailable: {status()}")
    x, packed, scales = jnp.asarray(x), jnp.asarray(packed), jnp.asarray(scales)
    if x.dtype != jnp.float32:
        x = x.astype(jnp.float32)
    if x.ndim != packed.ndim or x.shape[:-2] != packed.shape[:-2]:
        raise ValueError(f"int4_kernel.matmul: x {x.shape} and codes {packed.shape} need the same batch dims")
    return _matmul(x, packed, scales, None if zeros is None else jnp.asarray(zeros), int(group_size))


__all__ = ["TARGET", "available", "isa", "library_path", "matmul", "pool_threads", "set_isa", "set_threads", "status"]
