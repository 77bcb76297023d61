"""Save and restore of a named state dict, against plain ``safetensors.numpy``.

The state dict (``--mb`` MiB of float32, default 200) is a dict of NamedArrays shaped like a
model's weights: ``blocks.w_in`` ``(layers, embed, mlp)``, ``blocks.w_out`` ``(layers, mlp,
embed)``, ``blocks.norm`` ``(layers, embed)`` and ``embedding`` ``(vocab, embed)``. It is
written once with :func:`namax.save_state_dict` (axis names in the safetensors metadata) to a
temporary directory, and read back by

* ``safetensors.numpy.load_file`` -- the baseline: the whole file as NumPy arrays;
* ``jax.device_put`` of that (the plain way to a jax array on 1 device), for reference;
* ``load_state_dict`` -- namax's eager read (NumPy NamedArrays);
* ``from_state_dict`` of ``load_state_dict(path, lazy=True)`` onto 1 device (no mapping);
* the same onto 8 simulated CPU devices, a 4x2 ``("data", "model")`` mesh under the
  FSDP-like mapping ``{"embed": "data", "mlp": "model", "vocab": "model"}`` (every large
  tensor fully sharded), each device reading only its own block;
* for contrast, the eager ``load_state_dict`` (whole file in memory) then
  ``from_state_dict`` onto the same mesh.

Saving is timed too: ``save_state_dict(to_state_dict(params))`` against
``safetensors.numpy.save_file`` of the same arrays as NumPy (a second table).

Times are medians of ``--runs`` interleaved runs in this process (the file is in the page
cache after the first read, for every candidate alike). Peak memory is measured in a
separate subprocess per case (started through a small launcher process, so that it does not
inherit this process's peak): ``ru_maxrss`` after the case minus ``ru_maxrss`` after the
imports and a warm-up of the same case on a tiny file. Every reader here goes through
safetensors' memory map of the file, and the mapped pages it touches count as resident: 1.0x
the file size for every case, the baseline included. So ``RSS / file size`` is 2.0 for the
baseline (the mapped file and one NumPy copy), and a restore that holds the arrays once plus
a block at a time stays well under 3. "MB" is MiB.

    python benchmarks/checkpoint.py --mb 200 --runs 5
"""

from __future__ import annotations

import os

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import safetensors.numpy  # noqa: E402
from _timing import interleaved_medians, ratio  # noqa: E402

import namax as nx  # noqa: E402
from namax.state_dict import from_state_dict, load_state_dict, save_state_dict, to_state_dict  # noqa: E402

MiB = 1 << 20
MAPPING = {"embed": "data", "mlp": "model", "vocab": "model"}
MESH_SHAPE = (4, 2)
MESH_AXES = ("data", "model")
LAYERS = 4
TINY_SIZES = {"layers": 2, "embed": 8, "mlp": 8, "vocab": 16}  # the warm-up state dict of each child

RESTORE_CASES = {
    "load_file": "safetensors.numpy load_file (baseline)",
    "load_file_put": "safetensors.numpy load_file + jax.device_put, 1 device",
    "load_eager": "namax load_state_dict (eager, NumPy)",
    "restore_1": "from_state_dict, lazy, 1 device",
    "restore_mesh": "from_state_dict, lazy, 4x2 mesh (8 devices)",
    "restore_mesh_eager": "load_state_dict + from_state_dict, 4x2 mesh",
}
SAVE_CASES = {
    "save_file": "safetensors.numpy save_file (baseline)",
    "save_named": "namax save_state_dict(to_state_dict(...))",
}


# --- the state dict ---------------------------------------------------------------------------
def sizes_for(mb: float) -> dict[str, int]:
    """Axis sizes giving about ``mb`` MiB of float32 (embed divisible by 4, mlp and vocab by 2)."""
    floats = int(mb * MiB) // 4
    embed = 1024 if mb >= 64 else 256
    vocab = 8 * embed
    rest = floats - vocab * embed - LAYERS * embed
    mlp = max(8, int(round(rest / (2 * LAYERS * embed) / 8)) * 8)
    return {"layers": LAYERS, "embed": embed, "mlp": mlp, "vocab": vocab}


def shapes() -> dict[str, tuple[str, ...]]:
    """Key -> axis names of each tensor."""
    return {
        "embedding": ("vocab", "embed"),
        "blocks.w_in": ("layers", "embed", "mlp"),
        "blocks.w_out": ("layers", "mlp", "embed"),
        "blocks.norm": ("layers", "embed"),
    }


def make_params(sizes: dict[str, int], seed: int = 0) -> dict:
    """The nested dict of NamedArrays to save, NumPy inside (drawn in place: no transient copy).

    (On the CPU backend ``np.asarray`` of a jax array is a view, so saving these is saving jax arrays.)
    """
    rng = np.random.default_rng(seed)

    def arr(names):
        axes = tuple(nx.Axis(n, sizes[n]) for n in names)
        return nx.NamedArray(rng.standard_normal([a.size for a in axes], dtype=np.float32), axes)

    s = shapes()
    return {"embedding": arr(s["embedding"]),
            "blocks": {"w_in": arr(s["blocks.w_in"]), "w_out": arr(s["blocks.w_out"]),
                       "norm": arr(s["blocks.norm"])}}


def make_template(sizes: dict[str, int]) -> dict:
    """The same structure with ``jax.ShapeDtypeStruct`` leaves (nothing allocated)."""
    def abstract(names):
        axes = tuple(nx.Axis(n, sizes[n]) for n in names)
        return nx.NamedArray(jax.ShapeDtypeStruct(tuple(a.size for a in axes), np.float32), axes)

    s = shapes()
    return {"embedding": abstract(s["embedding"]),
            "blocks": {"w_in": abstract(s["blocks.w_in"]), "w_out": abstract(s["blocks.w_out"]),
                       "norm": abstract(s["blocks.norm"])}}


def make_mesh() -> jax.sharding.Mesh:
    n = MESH_SHAPE[0] * MESH_SHAPE[1]
    if jax.device_count() < n:
        raise SystemExit(f"checkpoint.py needs {n} devices, found {jax.device_count()} (XLA_FLAGS="
                         f"{os.environ.get('XLA_FLAGS', '')!r}); unset XLA_FLAGS or set "
                         f"--xla_force_host_platform_device_count=8")
    return jax.sharding.Mesh(np.array(jax.devices()[:n]).reshape(MESH_SHAPE), MESH_AXES)


# --- the cases ---------------------------------------------------------------------------------
def restore_calls(path: str, template: dict, mesh) -> dict:
    """Case -> zero-argument callable reading ``path``."""
    return {
        "load_file": lambda: safetensors.numpy.load_file(path),
        "load_file_put": lambda: jax.device_put(safetensors.numpy.load_file(path)),
        "load_eager": lambda: load_state_dict(path),
        "restore_1": lambda: from_state_dict(template, load_state_dict(path, lazy=True)),
        "restore_mesh": lambda: from_state_dict(template, load_state_dict(path, lazy=True), mapping=MAPPING,
                                                mesh=mesh),
        "restore_mesh_eager": lambda: from_state_dict(template, load_state_dict(path), mapping=MAPPING, mesh=mesh),
    }


def save_calls(params: dict, numpy_sd: dict, directory: str) -> dict:
    """Case -> zero-argument callable writing the state dict into ``directory``."""
    return {
        "save_file": lambda: safetensors.numpy.save_file(numpy_sd, os.path.join(directory, "save_file.safetensors")),
        "save_named": lambda: save_state_dict(to_state_dict(params), os.path.join(directory, "named.safetensors")),
    }


def numpy_state_dict(params: dict) -> dict:
    return {k: np.asarray(v.array) for k, v in to_state_dict(params).items()}


def check_restored(case: str, out, params: dict, mesh) -> None:
    """The restored values equal the saved ones, with the expected shardings."""
    want = to_state_dict(params)
    got = out if case.startswith("load_file") else to_state_dict(out)
    assert sorted(got) == sorted(want), (case, sorted(got))
    for k, v in want.items():
        g = got[k]
        if isinstance(g, nx.NamedArray):
            assert g.axis_names == v.axis_names, (case, k, g.axis_names)
            g = g.array
        if case.startswith("restore_mesh"):
            assert g.sharding.mesh.shape == mesh.shape, (case, k, g.sharding)
            if k != "blocks.norm":
                assert g.addressable_shards[0].data.size * 8 == v.size, (case, k, g.sharding.spec)
        np.testing.assert_array_equal(np.asarray(g), np.asarray(v.array), err_msg=f"{case} {k}")


# --- peak memory, one subprocess per case ------------------------------------------------------
def _maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def _own_status_bytes(field: str):
    """A field of ``/proc/self/status`` (``VmHWM``: this address space's own peak RSS, never inherited;
    ``VmRSS``: the current RSS) in bytes, or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def child(spec: dict) -> None:
    """Run one case in this (fresh) process; print ``{"peak": bytes above baseline}`` as JSON."""
    case = spec["case"]
    mesh = make_mesh()
    tiny_sizes, sizes = spec["tiny_sizes"], spec["sizes"]
    with tempfile.TemporaryDirectory() as d:
        if case in SAVE_CASES:
            # warm-up on a tiny state dict, then build the real one: the baseline includes the arrays
            tiny = make_params(tiny_sizes, seed=1)
            save_calls(tiny, numpy_state_dict(tiny), d)[case]()
            params = make_params(sizes)
            numpy_sd = numpy_state_dict(params) if case == "save_file" else None
            call = save_calls(params, numpy_sd, d)[case]
        else:
            out = restore_calls(spec["tiny_path"], make_template(tiny_sizes), mesh)[case]()
            jax.block_until_ready(out)
            del out
            call = restore_calls(spec["path"], make_template(sizes), mesh)[case]
        gc.collect()
        base, hwm, rss_at_base = _maxrss_bytes(), _own_status_bytes("VmHWM"), _own_status_bytes("VmRSS")
        out = call()
        jax.block_until_ready(out)
        peak = _maxrss_bytes()
    print(json.dumps({"case": case, "peak": peak - base, "base": base, "hwm": hwm, "rss_at_base": rss_at_base}))


# A child exec'd straight from this (large) process starts with this process's peak RSS as its own
# ru_maxrss (Linux carries the high-water mark of the forked address space across exec). A small
# launcher process in between starts its child from its own, small, address space instead.
_LAUNCHER = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


def measure_rss(case: str, common: dict, timeout: float) -> int:
    """Peak RSS increase (bytes) of ``case``, run in a fresh process."""
    spec = dict(common, case=case)
    cmd = [sys.executable, "-c", _LAUNCHER, sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
    if proc.returncode != 0:
        raise RuntimeError(f"child for {case} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["hwm"] is not None and result["base"] > result["hwm"] + 64 * MiB:
        raise RuntimeError(f"child for {case}: ru_maxrss at baseline ({result['base'] / MiB:.0f} MB) is above the "
                           f"child's own peak ({result['hwm'] / MiB:.0f} MB): it was inherited from the launcher")
    if result["rss_at_base"] is not None and result["base"] > result["rss_at_base"] + 32 * MiB:
        raise RuntimeError(f"child for {case}: its peak before the case ({result['base'] / MiB:.0f} MB) is above its "
                           f"RSS then ({result['rss_at_base'] / MiB:.0f} MB): the baseline hides part of the case")
    return result["peak"]


# --- main --------------------------------------------------------------------------------------
def table(title: str, rows: list[tuple[str, float, str, float, float]], baseline: str) -> str:
    lines = [f"**{title}**", "",
             f"| case | time (s) | ratio vs {baseline} | peak RSS increase (MB) | RSS / file size |",
             "|---|---|---|---|---|"]
    for name, t, r, rss, per_file in rows:
        lines.append(f"| {name} | {t:.4f} | {r} | {rss:.1f} | {per_file:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=200.0, help="size of the state dict in MiB (float32)")
    parser.add_argument("--runs", type=int, default=5, help="interleaved timed runs per case (median)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(json.loads(args.child))
        return

    mesh = make_mesh()
    sizes, tiny_sizes = sizes_for(args.mb), TINY_SIZES
    params = make_params(sizes)
    template = make_template(sizes)
    with tempfile.TemporaryDirectory(prefix="namax_ckpt_") as d:
        path, tiny_path = os.path.join(d, "params.safetensors"), os.path.join(d, "tiny.safetensors")
        save_state_dict(to_state_dict(params), path)
        save_state_dict(to_state_dict(make_params(tiny_sizes, seed=1)), tiny_path)
        file_bytes = os.path.getsize(path)
        print(f"state dict: {', '.join(f'{k}={v}' for k, v in sizes.items())}; file {file_bytes / MiB:.1f} MB; "
              f"{jax.device_count()} {jax.default_backend()} devices; mesh {MESH_SHAPE} {MESH_AXES}; "
              f"mapping {MAPPING}; runs {args.runs}", flush=True)

        restores = restore_calls(path, template, mesh)
        for case, call in restores.items():
            out = call()
            check_restored(case, out, params, mesh)
            del out
        r_times = interleaved_medians(restores, runs=args.runs, steps=1, warmup=1)

        save_dir = os.path.join(d, "saves")
        os.makedirs(save_dir)
        saves = save_calls(params, numpy_state_dict(params), save_dir)
        s_times = interleaved_medians(saves, runs=args.runs, steps=1, warmup=1)
        for f in os.listdir(save_dir):
            assert os.path.getsize(os.path.join(save_dir, f)) >= file_bytes * 0.99, f
        shutil.rmtree(save_dir)

        common = {"path": path, "tiny_path": tiny_path, "sizes": sizes, "tiny_sizes": tiny_sizes}
        timeout = 120 + 2.0 * args.mb
        rss = {case: measure_rss(case, common, timeout) for case in [*RESTORE_CASES, *SAVE_CASES]}

    def rows(cases, times, base):
        return [(label, times[c], ratio(times[c], times[base]), rss[c] / MiB, rss[c] / file_bytes)
                for c, label in cases.items()]

    print()
    print(table("Restore", rows(RESTORE_CASES, r_times, "load_file"), "safetensors.numpy load"))
    print()
    print(table("Save", rows(SAVE_CASES, s_times, "save_file"), "safetensors.numpy save"))
    print()
    print("Peak RSS: ru_maxrss of a fresh process per case, minus its value after imports and a warm-up. Every "
          "reader here maps the file through safetensors, and the pages it touches count as resident (1.0x the "
          "file size; the page cache, not a copy): RSS / file size minus 1 is what the reader itself held at its "
          "peak. The save cases start with the arrays in memory.")


if __name__ == "__main__":
    main()
