"""benchmarks/quant.py's driver helpers: aggregation over worker processes, the table, target
checks and the busy background load. No benchmark is run (the driver itself is checked by hand
with ``python benchmarks/quant.py --quick``)."""

import importlib.util
import pathlib
import sys
import time

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def quant():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports ``_timing`` from its own folder
    try:
        spec = importlib.util.spec_from_file_location("quant_benchmark", BENCHMARKS / "quant.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def _worker(quant, condition, **values):
    rows = []
    for name, (value, target) in values.items():
        unit, decimals = ("", 3) if name == "temp" else ("x", 2)
        rows.append(quant.row_record(name, quant.Value(value, decimals, unit), target))
    return {"condition": condition, "rows": rows}


def test_rows_keep_their_printed_form_and_exact_number(quant):
    v = quant.Value(0.4249)
    assert v == "0.42x" and isinstance(v, str) and v.number == 0.4249
    assert quant.row_record("a", v, "<= 1")["value"] == 0.4249
    # a plain string (an older row function) is parsed
    assert quant.row_record("b", "0.5156", "<= 0.53") == {
        "name": "b", "text": "0.5156", "value": 0.5156, "decimals": 4, "unit": "", "target": "<= 0.53"}
    assert quant.row_record("c", "1.30x", "-")["value"] == 1.3


def test_aggregate_median_min_max_per_condition(quant):
    workers = [_worker(quant, "idle", decode=(0.30, "<= 0.35"), temp=(0.25, "< 0.5")),
               _worker(quant, "busy", decode=(0.50, "<= 0.35"), temp=(0.25, "< 0.5")),
               _worker(quant, "busy", decode=(0.40, "<= 0.35"), temp=(0.25, "< 0.5")),
               _worker(quant, "idle", decode=(0.34, "<= 0.35"), temp=(0.25, "< 0.5")),
               _worker(quant, "idle", decode=(0.20, "<= 0.35"), temp=(0.25, "< 0.5")),
               _worker(quant, "busy", decode=(0.45, "<= 0.35"), temp=(0.25, "< 0.5"))]
    entries = quant.aggregate(workers)
    assert [e["name"] for e in entries] == ["decode", "temp"]
    assert entries[0]["values"] == {"idle": [0.30, 0.34, 0.20], "busy": [0.50, 0.40, 0.45]}
    assert quant.spread(entries[0]["values"]["busy"]) == (0.45, 0.40, 0.50)
    table = quant.render_table(entries, ["idle", "busy"]).splitlines()
    assert table[0] == "| measurement | idle median (min-max) | busy median (min-max) | target |"
    assert table[1] == "|---|---|---|---|"
    assert table[2] == "| decode | 0.30x (0.20-0.34) | 0.45x (0.40-0.50) **miss** | <= 0.35 |"
    assert table[3] == "| temp | 0.250 | 0.250 | < 0.5 |"
    assert quant.misses(entries) == [("decode", "busy")]
    # one condition only, and a condition with no values
    assert quant.render_table(entries, ["busy"]).splitlines()[2] == "| decode | 0.45x (0.40-0.50) **miss** | <= 0.35 |"
    assert quant.render_table(entries, ["idle", "other"]).splitlines()[3] == "| temp | 0.250 | - | < 0.5 |"


def test_format_spread_and_targets(quant):
    assert quant.format_spread([0.42, 0.40, 0.45]) == "0.42x (0.40-0.45)"
    assert quant.format_spread([0.5156] * 3, 4, "") == "0.5156"
    assert quant.format_spread([]) == "-"
    assert quant.format_spread([1.0, 2.0]) == "1.50x (1.00-2.00)"  # even count: mean of the middle two
    check = quant.meets_target
    assert check(0.35, "<= 0.35") and not check(0.36, "<= 0.35")
    assert check(1.05, "<= 1.05") and not check(0.5, "< 0.5") and check(0.49, "< 0.5")
    assert check(1.3, "> 1 (the full-weight gradient dot)") and not check(1.0, "> 1 (...)")
    assert check(1.0, "-") is None and check(0.3, "well below 1") is None


def test_interleaved_schedule_and_worker_command(quant):
    assert quant.schedule(4, ["idle", "busy"]) == [(0, "idle"), (0, "busy"), (1, "busy"), (1, "idle"),
                                                   (2, "idle"), (2, "busy"), (3, "busy"), (3, "idle")]
    assert quant.schedule(3, ["busy"]) == [(0, "busy"), (1, "busy"), (2, "busy")]
    args = quant.parse_args(["--sizes", "256", "--runs", "7", "--processes", "3"])
    cmd = quant.worker_command(args)
    assert cmd[0] == sys.executable and cmd[1].endswith("quant.py") and cmd[2:5] == ["--worker", "--format", "json"]
    assert cmd[cmd.index("--sizes") + 1] == "256" and "--quick" not in cmd
    assert quant.parse_worker_output('warning\n{"rows": []}\n') == {"rows": []}
    with pytest.raises(ValueError):
        quant.parse_worker_output("no json here")


def test_cli_rules(quant):
    args = quant.parse_args([])
    defaults = (args.sizes, args.runs, args.processes, args.load, args.worker)
    assert defaults == ([2048, 4096], 7, 3, ["idle", "busy"], False)
    quick = quant.parse_args(["--quick"])
    assert quick.sizes == [512] and quick.runs < 7
    assert quant.parse_args(["--quick", "--sizes", "256"]).sizes == [256]
    for bad in (["--runs", "5"], ["--processes", "2"], ["--load", "idle,noisy"], ["--load", "idle,idle"]):
        with pytest.raises(SystemExit):
            quant.parse_args(bad)


def test_int4_settings_are_read_generically(quant):
    settings = quant.int4_settings()
    assert "form" in settings and all(k == "form" or k.isupper() for k in settings)


def test_busy_load_spins_a_core_and_is_always_stopped(quant):
    with quant.BusyLoad(1, settle=0.0) as load:
        (proc,) = load.procs
        assert load.alive()
        time.sleep(0.3)
        used = load.cores_used()
        assert used is None or used > 0.05  # ~1 on an idle core; much less on a busy shared host
    assert proc.poll() is not None and load.procs == []

    with pytest.raises(KeyboardInterrupt):
        with quant.BusyLoad(1, settle=0.0) as load:
            (proc,) = load.procs
            raise KeyboardInterrupt
    assert proc.poll() is not None

    with quant.BusyLoad(0) as idle:
        assert idle.procs == [] and idle.cores_used() == 0.0


def test_run_worker_stops_the_load_when_the_worker_fails(quant, monkeypatch):
    started = []
    real_start = quant.BusyLoad.start

    def start(self):
        started.append(self)
        return real_start(self)

    monkeypatch.setattr(quant.BusyLoad, "start", start)
    with pytest.raises(RuntimeError, match="worker failed"):
        quant.run_worker([sys.executable, "-c", "import sys; sys.exit(3)"], cores=1)
    (load,) = started
    assert load.procs == []
    result = quant.run_worker([sys.executable, "-c", "print('{\"rows\": []}')"], cores=1)
    assert result["rows"] == [] and result["load_cores"] == 1 and len(result["loadavg_before"]) == 3


def test_idle_warning(quant):
    def result(condition, load):
        return {"condition": condition, "load_cores": int(condition == "busy"), "loadavg_before": [load, 0, 0],
                "env": {"cpus_usable": 2}}
    assert quant.idle_warning([result("idle", 0.3), result("busy", 2.5)]) == []
    assert "not idle" in quant.idle_warning([result("idle", 0.3), result("idle", 1.5)])[0]
