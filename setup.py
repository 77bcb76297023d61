"""Build of namax's optional CPU kernel (``csrc/int4_matmul.cc``); the metadata lives in pyproject.toml.

The kernel is an XLA FFI handler compiled against the headers jaxlib ships
(``jaxlib/include/xla/ffi/api``) into a plain shared library, ``namax/quant/_int4_kernel*.so``,
which :mod:`namax.quant.int4_kernel` loads with ``ctypes``. It is built for baseline x86-64
(the AVX2 and AVX-512 code paths are chosen at run time), so a wheel runs on any x86-64 CPU.
A failed build (no C++ compiler, no jaxlib headers, another platform) only prints a warning:
namax then uses its pure-XLA int4 dot. ``NAMAX_BUILD_KERNEL=0`` skips the build.
"""

import importlib.util
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _jaxlib_include() -> str:
    spec = importlib.util.find_spec("jaxlib")
    if spec is None or not spec.submodule_search_locations:
        return ""
    for root in spec.submodule_search_locations:
        path = os.path.join(root, "include")
        if os.path.exists(os.path.join(path, "xla", "ffi", "api", "ffi.h")):
            return path
    return ""


class OptionalBuildExt(build_ext):
    """``build_ext`` for a plain shared library whose failure does not fail the install."""

    def get_export_symbols(self, ext):
        return []  # not a Python extension module: no PyInit_ symbol

    def run(self):
        if os.environ.get("NAMAX_BUILD_KERNEL", "1") == "0":
            print("namax: NAMAX_BUILD_KERNEL=0, skipping the int4 CPU kernel", file=sys.stderr)
            return
        include = _jaxlib_include()
        if not include:
            print("namax: warning: jaxlib's FFI headers were not found; the int4 CPU kernel is not built "
                  "(the pure-XLA int4 dot is used)", file=sys.stderr)
            return
        for ext in self.extensions:
            ext.include_dirs.append(include)
        try:
            super().run()
        except Exception as e:  # noqa: BLE001  (compiler missing or failing: keep the install)
            print(f"namax: warning: building the int4 CPU kernel failed ({type(e).__name__}: {e}); "
                  f"the pure-XLA int4 dot is used", file=sys.stderr)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001
            print(f"namax: warning: building {ext.name} failed ({type(e).__name__}: {e}); "
                  f"the pure-XLA int4 dot is used", file=sys.stderr)


_compile_args = [] if sys.platform == "win32" else ["-std=c++17", "-O3", "-fvisibility=hidden", "-Wno-return-type",
                                                   "-Wno-maybe-uninitialized"]

setup(
    ext_modules=[Extension("namax.quant._int4_kernel", sources=["csrc/int4_matmul.cc"], depends=["csrc/int4_tile.inc"],
                           language="c++",
                           extra_compile_args=_compile_args, optional=True)],
    cmdclass={"build_ext": OptionalBuildExt},
)
