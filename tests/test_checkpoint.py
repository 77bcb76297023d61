"""namax.checkpoint refuses damage: truncated, empty, bad-header, bit-flipped, NaN-poisoned,
mismatched and config-changed checkpoints are reported in one line and the previous good one
is used; saves are atomic (a crash before the rename leaves the old checkpoints loadable) and
durable (fsync of the file, then the folder); keep=N; and the demo, SIGKILLed in the middle of
a save, resumes to the weights of an uninterrupted run."""

import dataclasses
import json
import logging
import os
import pathlib
import re
import signal
import struct
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

import namax as nx
from namax import checkpoint as ckpt

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))  # the demo's modules (train_lm, gpt, ...)
E, M, H = nx.Axis("embed", 4), nx.Axis("mlp", 3), nx.Axis("heads", 3)
W_KEY, B_KEY = "params/['w']", "params/['b']"


def trees(step, **changes):
    """Trees whose values depend on ``step`` (so a test can tell which checkpoint loaded)."""
    w = nx.named(np.arange(12, dtype=np.float32).reshape(4, 3) + step, (E, M))
    params = {"w": w, "b": np.full(3, step, np.float32)}
    params.update(changes)
    return {"params": params, "opt_state": (np.int32(step), np.zeros(2, np.float32) - step)}


TEMPLATE = trees(0)


def assert_is_step(loaded, step):
    want = trees(step)
    got = jax.tree_util.tree_leaves(loaded, is_leaf=nx.is_named)
    ref = jax.tree_util.tree_leaves(want, is_leaf=nx.is_named)
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        if isinstance(b, nx.NamedArray):
            assert a.axes == b.axes
            a, b = a.array, b.array
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert np.asarray(a).dtype == np.asarray(b).dtype


def skip_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "namax.checkpoint" and r.levelno == logging.WARNING]


def tensor_offset(path, key):
    """Byte offset of ``key``'s data in a safetensors file."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return 8 + n + json.loads(raw[8:8 + n])[key]["data_offsets"][0]


def flip_bit(path, offset, bit=3):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 1 << bit
    path.write_bytes(bytes(raw))


# --- damage of the newest checkpoint: reported in one line, the previous good one is used ----
def _truncate(path):
    path.write_bytes(path.read_bytes()[:-7])


def _empty(path):
    path.write_bytes(b"")


def _bad_header(path):
    raw = path.read_bytes()
    path.write_bytes(raw[:8] + b"{not json" + raw[17:])


def _flip_data(path):
    flip_bit(path, tensor_offset(path, W_KEY) + 5)


def _flip_metadata(path):
    raw = path.read_bytes()
    flip_bit(path, raw.index(b"hello"), bit=0)  # 'h' -> 'i' inside the "extra" entry of the header


def _nan(path):
    ckpt.save(path.parent, 2, trees(2, w=nx.named(np.full((4, 3), np.nan, np.float32), (E, M))), allow_nonfinite=True)


def _wrong_shape(path):
    ckpt.save(path.parent, 2, trees(2, w=nx.ones((E.resize(5), M))))


def _wrong_axes(path):
    ckpt.save(path.parent, 2, trees(2, w=nx.ones((E, H))))


def _extra_tensor(path):
    ckpt.save(path.parent, 2, trees(2, c=np.zeros(1)))


def _not_namax(path):
    save_file({"x": np.zeros(2)}, str(path))


def _renamed_older(path):
    path.write_bytes((path.parent / "step_000001.safetensors").read_bytes())  # a stray copy of step 1 named step 2


DAMAGE = {
    "truncated": (_truncate, r"not a readable safetensors file \(.+\)"),
    "empty": (_empty, r"empty file"),
    "bad header": (_bad_header, r"not a readable safetensors file \(.+\)"),
    "bit flip in data": (_flip_data, r"checksum mismatch in tensor \"params/\['w'\]\" \(its bytes are damaged\)"),
    "bit flip in metadata": (_flip_metadata, r"metadata checksum mismatch \(the header is damaged\)"),
    "NaN": (_nan, r"tensor \"params/\['w'\]\" holds 12 non-finite value\(s\) \(NaN or infinity; "
                  r"allow_nonfinite=True loads it anyway\)"),
    "wrong shape": (_wrong_shape, r"tensor \"params/\['w'\]\" is float32\[5, 3\], the template wants float32\[4, 3\]"),
    "wrong axis names": (_wrong_axes, r"tensor \"params/\['w'\]\" has axes \['embed', 'heads'\], "
                                      r"the template wants \['embed', 'mlp'\]"),
    "extra tensor": (_extra_tensor, r"tensor \"params/\['c'\]\" is not in the template \(1 such tensor\(s\)\)"),
    "not a namax file": (_not_namax, r"not a namax checkpoint \(format None, expected 'namax/1'\)"),
    "renamed": (_renamed_older, r"the file name says step 2, its metadata step 1"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_latest_is_reported_in_one_line_and_skipped(tmp_path, caplog, kind):
    damage, reason = DAMAGE[kind]
    ckpt.save(tmp_path, 1, trees(1), extra={"note": "hello"})
    newest = ckpt.save(tmp_path, 2, trees(2), extra={"note": "hello"})
    damage(newest)
    # load() alone refuses it
    with pytest.raises(ckpt.CheckpointError, match=f"^{re.escape(str(newest))}: {reason}$") as err:
        ckpt.load(newest, TEMPLATE)
    assert err.value.path == newest
    caplog.set_level(logging.WARNING, logger="namax.checkpoint")
    step, loaded, meta = ckpt.restore(tmp_path, TEMPLATE)
    assert step == 1 and meta["path"] == str(tmp_path / "step_000001.safetensors")
    assert_is_step(loaded, 1)
    [line] = skip_lines(caplog)
    assert "\n" not in line
    assert re.fullmatch(f"skipping {re.escape(str(newest))}: {reason}", line), line
    assert list(meta["skipped"]) == [str(newest)]


def test_bit_flip_anywhere_in_a_tensor_is_caught(tmp_path):
    path = ckpt.save(tmp_path, 1, trees(1))
    clean = path.read_bytes()
    for key in (W_KEY, B_KEY, "opt_state/[1]"):
        for byte in (0, 7):
            path.write_bytes(clean)
            flip_bit(path, tensor_offset(path, key) + byte, bit=byte % 8)
            with pytest.raises(ckpt.CheckpointError, match=re.escape(f"checksum mismatch in tensor {key!r}")):
                ckpt.load(path, TEMPLATE)


def test_no_usable_checkpoint_lists_each_file(tmp_path, caplog):
    a = ckpt.save(tmp_path, 1, trees(1))
    b = ckpt.save(tmp_path, 2, trees(2))
    _empty(a)
    _truncate(b)
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.restore(tmp_path, TEMPLATE)
    lines = str(err.value).splitlines()
    assert lines[0] == f"{tmp_path}: no usable checkpoint among 2 file(s):"
    assert lines[1].startswith(f"  {b}: not a readable safetensors file (")
    assert lines[2] == f"  {a}: empty file"
    assert err.value.problems == {str(b): lines[1].split(": ", 1)[1], str(a): "empty file"}
    assert len(skip_lines(caplog)) == 2
    assert ckpt.restore(tmp_path / "missing", TEMPLATE) is None  # no files: nothing to restore, not an error


def test_nonfinite_refused_on_save_and_load_unless_allowed(tmp_path):
    poisoned = trees(3, b=np.array([0.0, np.inf, np.nan], np.float32))
    with pytest.raises(ValueError, match=re.escape(f"tensor {B_KEY!r} holds 2 non-finite value(s) (NaN or infinity); "
                                                   "refusing to save it")):
        ckpt.save(tmp_path, 3, poisoned)
    assert not list(tmp_path.iterdir())  # nothing written, not even a temporary file
    path = ckpt.save(tmp_path, 3, poisoned, allow_nonfinite=True)
    with pytest.raises(ckpt.CheckpointError, match=re.escape(f"tensor {B_KEY!r} holds 2 non-finite value(s)")):
        ckpt.load(path, TEMPLATE)
    _, loaded, _ = ckpt.restore(tmp_path, TEMPLATE, allow_nonfinite=True)
    np.testing.assert_array_equal(loaded["params"]["b"], [0.0, np.inf, np.nan])
    ckpt.save(tmp_path, 4, trees(4, b=np.array([1, 2, 3], np.int32)))  # integers are never non-finite


def test_config_change_is_an_error_naming_each_key(tmp_path):
    config = {"steps": 6, "learning_rate": 0.01, "seed": 0, "log_every": 1}
    ckpt.save(tmp_path, 1, trees(1), config=config)
    path = ckpt.save(tmp_path, 2, trees(2), config=config)
    new = dict(config, steps=8, learning_rate=0.02, log_every=5, batch=4)
    del new["seed"]
    with pytest.raises(ckpt.ConfigMismatchError) as err:
        ckpt.restore(tmp_path, TEMPLATE, config=new, allow_config_change={"log_every"})
    assert str(err.value) == (
        f"{path}: saved by a run with another configuration: steps 6 -> 8, learning_rate 0.01 -> 0.02, "
        "seed 0 -> <missing>, batch <missing> -> 4 (to continue anyway: "
        "allow_config_change={'steps', 'learning_rate', 'seed', 'batch'})")
    assert err.value.changes == {"steps": (6, 8), "learning_rate": (0.01, 0.02), "seed": (0, ckpt.MISSING),
                                 "batch": (ckpt.MISSING, 4)}
    # allowed explicitly: the newest checkpoint loads
    step, loaded, meta = ckpt.restore(tmp_path, TEMPLATE, config=new,
                                      allow_config_change=["steps", "learning_rate", "seed", "batch", "log_every"])
    assert step == 2 and meta["config"] == config
    assert_is_step(loaded, 2)
    # the same configuration (tuples compare as the lists JSON stores)
    assert ckpt.restore(tmp_path, TEMPLATE, config=config).step == 2


def test_config_mismatch_does_not_fall_back(tmp_path):
    ckpt.save(tmp_path, 1, trees(1), config={"seed": 0})
    ckpt.save(tmp_path, 2, trees(2), config={"seed": 1})  # another run's newer file
    with pytest.raises(ckpt.ConfigMismatchError, match=r"step_000002.safetensors: .* seed 1 -> 0"):
        ckpt.restore(tmp_path, TEMPLATE, config={"seed": 0})


def test_keep_last_n_and_leftovers(tmp_path):
    (tmp_path / ".step_000003.safetensors.123.abcd.tmp").write_bytes(b"half a file")  # a crashed save's
    stray = tmp_path / "step_000009.safetensors"
    stray.write_bytes(b"garbage")
    for step in range(1, 6):
        ckpt.save(tmp_path, step, trees(step), keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step_000004.safetensors", "step_000005.safetensors", "step_000009.safetensors"]
    _, loaded, _ = ckpt.load(tmp_path / "step_000004.safetensors", TEMPLATE)
    assert_is_step(loaded, 4)
    with pytest.raises(ValueError, match="keep must be None .* got 0"):
        ckpt.save(tmp_path, 6, trees(6), keep=0)


def test_crash_between_temp_write_and_replace_leaves_the_old_checkpoints(tmp_path, monkeypatch):
    ckpt.save(tmp_path, 1, trees(1))
    ckpt.save(tmp_path, 2, trees(2))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    written = []

    def crash(src, dst):
        written.append(pathlib.Path(src).read_bytes())
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="No space left on device"):
        ckpt.save(tmp_path, 3, trees(3), keep=1)
    monkeypatch.undo()
    assert len(written) == 1 and len(written[0]) > 100  # the temporary file had been written in full
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # old files kept, temp file gone
    step, loaded, _ = ckpt.restore(tmp_path, TEMPLATE)
    assert step == 2
    assert_is_step(loaded, 2)


@pytest.mark.skipif(not pathlib.Path("/proc/self/fd").is_dir(), reason="needs /proc to name file descriptors")
def test_save_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = ckpt.save(tmp_path, 7, trees(7))
    monkeypatch.undo()
    assert len(events) == 3, events
    (_, synced), (_, src, dst), (_, folder) = events
    assert synced == src and pathlib.Path(src).parent == tmp_path and pathlib.Path(src).name.startswith(".step_000007")
    assert dst == str(path) and folder == str(tmp_path.resolve())


def test_save_and_load_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="step must be an int >= 0, got -1"):
        ckpt.save(tmp_path, -1, trees(1))
    with pytest.raises(ValueError, match=r"config is not JSON-able"):
        ckpt.save(tmp_path, 1, trees(1), config={"f": object()})
    with pytest.raises(ValueError, match=r"tree names must be non-empty strings without '/', got 'a/b'"):
        ckpt.save(tmp_path, 1, {"a/b": np.zeros(1)})
    assert not list(tmp_path.iterdir())
    path = ckpt.save(tmp_path, 1, trees(1))
    with pytest.raises(ckpt.CheckpointError, match=r"no tensor \"params/\['z'\]\" \(1 of the template's 3"):
        ckpt.load(path, {"params": {**TEMPLATE["params"], "z": np.zeros(1)}})


# --- the demo: settings stored, refused when changed, and SIGKILL in the middle of a save ----
TINY = ["--steps", "6", "--batch-size", "8", "--seq-len", "16", "--embed", "32", "--heads", "4", "--layers", "2",
        "--learning-rate", "1e-2", "--warmup", "2", "--eval-every", "0", "--checkpoint-every", "1",
        "--keep-checkpoints", "2", "--no-progress", "--devices", "1", "--sample-after", ""]

# runs the demo as `python examples/train_lm.py ...` would, except that the rename of step 4's
# temporary file into place announces itself and hangs: the parent SIGKILLs it there
_HANG_IN_SAVE = """
import os, pathlib, runpy, sys, time
real, sentinel = os.replace, pathlib.Path(sys.argv[1])
def replace(src, dst, *args, **kwargs):
    if pathlib.Path(dst).name == "step_000004.safetensors":
        sentinel.write_text(str(src))
        time.sleep(600)
    return real(src, dst, *args, **kwargs)
os.replace = replace
script = str(pathlib.Path(sys.argv[2]).resolve())
sys.argv = [script, *sys.argv[3:]]
sys.path.insert(0, os.path.dirname(script))
runpy.run_path(script, run_name="__main__")
"""


def _env():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _demo_options(ckpt_dir):
    from train_lm import parse_args

    return parse_args([*TINY, "--checkpoint-dir", str(ckpt_dir)])


@pytest.mark.slow
def test_demo_killed_during_a_save_resumes_to_the_uninterrupted_weights(tmp_path):
    from train_lm import train

    ckpt_dir, sentinel = tmp_path / "run", tmp_path / "in_save"
    proc = subprocess.Popen([sys.executable, "-c", _HANG_IN_SAVE, str(sentinel), str(EXAMPLES / "train_lm.py"), *TINY,
                             "--checkpoint-dir", str(ckpt_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(), cwd=EXAMPLES)
    try:
        # meanwhile, the uninterrupted run in this process
        reference = train(_demo_options(tmp_path / "reference"), log=lambda *_: None)
        deadline = time.monotonic() + 120
        while not sentinel.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sentinel.exists(), f"the demo never reached step 4's save:\n{proc.communicate(timeout=5)[1][-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    temp = pathlib.Path(sentinel.read_text())
    # killed between the write of step 4's temporary file and its rename: steps 2 and 3 (keep 2) + the temp
    assert sorted(p.name for p in ckpt_dir.iterdir()) == [temp.name, "step_000002.safetensors",
                                                          "step_000003.safetensors"]
    # and a damaged stray with a higher step, which the resume must skip (and later replace)
    (ckpt_dir / "step_000005.safetensors").write_bytes((ckpt_dir / "step_000003.safetensors").read_bytes()[:-9])

    resumed = subprocess.run([sys.executable, str(EXAMPLES / "train_lm.py"), *TINY, "--checkpoint-dir", str(ckpt_dir),
                              "--resume"], capture_output=True, text=True, env=_env(), cwd=EXAMPLES, timeout=150)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    skips = [line for line in resumed.stderr.splitlines() if "skipping" in line]
    assert skips == [f"skipping {ckpt_dir / 'step_000005.safetensors'}: not a readable safetensors file "
                     "(Error while deserializing header: incomplete metadata, file not fully covered)"], resumed.stderr
    assert f"resumed from {ckpt_dir / 'step_000003.safetensors'} at step 3" in resumed.stdout
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["step_000005.safetensors", "step_000006.safetensors"]

    # bitwise the uninterrupted run's final weights and optimizer state
    final = ckpt.load(ckpt_dir / "step_000006.safetensors", {"params": reference.params})
    assert final.step == 6
    for a, b in zip(jax.tree_util.tree_leaves(final.trees), jax.tree_util.tree_leaves(reference.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    ref_file = ckpt.read_metadata(tmp_path / "reference" / "step_000006.safetensors")
    assert final.metadata["checksums"] == ref_file["checksums"]  # optimizer state too


def test_demo_resume_with_other_settings_names_them(tmp_path):
    from train_lm import main, run_config, train

    opts = _demo_options(tmp_path)
    path = ckpt.save(tmp_path, 2, {"params": {}}, config=run_config(opts))
    changed = dataclasses.replace(opts, steps=8, learning_rate=0.02, log_every=3, resume=True)
    with pytest.raises(ckpt.ConfigMismatchError, match=r"steps 6 -> 8, learning_rate 0.01 -> 0.02 \("):
        train(changed, log=lambda *_: None)
    with pytest.raises(SystemExit, match=re.escape(
            f"--resume: {path} was saved by a run with other settings: --steps 6 -> 8, --learning-rate 0.01 -> 0.02. "
            "Resume with the same settings, or pass --allow-config-change steps,learning-rate to continue")):
        main(changed)


def test_round_trip_keeps_values_names_and_metadata(tmp_path):
    path = ckpt.save(tmp_path, 12, trees(12), extra={"kind": "full"}, config={"steps": 6, "shape": (4, 3)})
    assert path == tmp_path / "step_000012.safetensors"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not a private temporary
    step, loaded, meta = ckpt.load(path, TEMPLATE, config={"steps": 6, "shape": [4, 3]})
    assert step == 12 and meta["extra"] == {"kind": "full"} and meta["config"] == {"steps": 6, "shape": [4, 3]}
    assert_is_step(loaded, 12)
    assert meta["axes"] == {W_KEY: ["embed", "mlp"]}
    assert sorted(meta["checksums"]) == sorted([W_KEY, B_KEY, "opt_state/[0]", "opt_state/[1]"])
    # a template of ShapeDtypeStructs works too, and a layout change is undone by name
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
                                      trees(0, w=nx.zeros((M, E))))
    _, moved, _ = ckpt.load(path, abstract)
    assert moved["params"]["w"].axes == (M, E)
    np.testing.assert_array_equal(moved["params"]["w"].array, np.asarray(trees(12)["params"]["w"].array).T)
