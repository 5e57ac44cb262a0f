"""lepton-exp-results: run records -> tables, plots and the list of missing/failed runs.

The fixture sweep is written as JSON files (no training): a Hydra multirun over
distill=kd,at x distill.temperature=1,4 x seed=0,1 (8 jobs), where 6 completed, 1 failed
(it even logged a test/acc, which must not be averaged) and 1 never ran.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lepton_exp.results.cli import main
from lepton_exp.results.collect import collect_records
from lepton_exp.results.run import method_name
from lepton_exp.results.sweep import (
    expected_jobs,
    find_grids,
    find_problems,
    load_grid,
    normalise_value,
)
from lepton_exp.results.table import build_table, format_cell

MULTIRUN_YAML = """\
hydra:
  run:
    dir: ${paths.output_dir}/runs/${now:%Y-%m-%d}/${now:%H-%M-%S}_${name}
  sweep:
    dir: ${paths.output_dir}/multiruns/${now:%Y-%m-%d}/${now:%H-%M-%S}
    subdir: ${hydra.job.num}_${name}
  sweeper:
    _target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper
    max_batch_size: null
    params: null
  overrides:
    hydra:
    - hydra.mode=MULTIRUN
    task:
    - data=synthetic
    - distill=kd,at
    - distill.temperature=1,4
    - seed=0,1
    - trainer.max_epochs=1
name: ${run_name:${stage}}
"""
# (method, temperature, seed) -> test/acc of the completed jobs.
ACC = {("kd", 1, 0): 0.50, ("kd", 1, 1): 0.54, ("kd", 4, 0): 0.60, ("kd", 4, 1): 0.66,
       ("at", 1, 0): 0.40, ("at", 4, 1): 0.47}
FAILED = ("at", 4, 0)
MISSING_JOB = ("at", 1, 1)


def write_record(run_dir: Path, record: dict) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(record, indent=2))
    return run_dir


def distill_record(run_dir: Path, method: str, temperature: float, seed: int,
                   acc: float | None, status: str = "completed", model: str = "resnet8",
                   overrides: list[str] | None = None) -> dict:
    name = f"distill-{method}-{model}-synthetic"
    record = {
        "status": status, "stage": "distill", "name": name, "seed": seed,
        "run_dir": str(run_dir), "started_at": "2026-11-23T17:02:26+0000",
        "overrides": overrides if overrides is not None else [
            "data=synthetic", f"distill={method}", f"distill.temperature={temperature}",
            f"seed={seed}", "trainer.max_epochs=1"],
        "git": {"commit": "abc", "dirty": False}, "versions": {},
        "config": {"stage": "distill", "seed": seed, "name": name,
                   "model": {"name": model}, "data": {"name": "synthetic"},
                   "prune": {"method": "none", "sparsity": 0.0},
                   "distill": {"temperature": float(temperature),
                               "terms": {method: {"weight": None, "hard": False}}}},
        "wall_time_s": 12.3,
    }
    if acc is not None:
        record["metrics"] = {"test/acc": acc, "test_best/acc": acc + 0.01,
                             "val/acc_best": acc + 0.02, "epochs": 1}
        record.update(num_params=77754 if method == "kd" else 80000, model_size_bytes=313776)
    if status != "completed":
        record.update(error="RuntimeError: boom", traceback="Traceback ...\nRuntimeError: boom")
    return record


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    sweep_dir = tmp_path / "kd_sweep"
    sweep_dir.mkdir()
    (sweep_dir / "multirun.yaml").write_text(MULTIRUN_YAML)
    jobs = [(m, t, s) for m in ("kd", "at") for t in (1, 4) for s in (0, 1)]
    for number, (method, temperature, seed) in enumerate(jobs):
        run_dir = sweep_dir / f"{number}_distill-{method}-resnet8-synthetic"
        if (method, temperature, seed) == MISSING_JOB:
            continue
        if (method, temperature, seed) == FAILED:  # failed after logging a test accuracy
            write_record(run_dir, distill_record(run_dir, method, temperature, seed, 0.99,
                                                 status="failed"))
            continue
        overrides = None
        if (method, temperature, seed) == ("kd", 4, 1):  # spelled 4.0: still job kd/4/1
            overrides = ["data=synthetic", "distill=kd", "distill.temperature=4.0", "seed=1",
                         "trainer.max_epochs=1"]
        write_record(run_dir, distill_record(run_dir, method, temperature, seed,
                                             ACC[(method, temperature, seed)],
                                             overrides=overrides))
    return sweep_dir


def values(method: str, temperature: int) -> list[float]:
    return [acc for (m, t, _), acc in ACC.items() if (m, t) == (method, temperature)]


# -- collect ----------------------------------------------------------------------------------

def test_run_keys_resolve_metrics_fields_config_and_derived(sweep):
    runs = {(r.get("method"), r.get("distill.temperature"), r.get("seed")): r
            for r in collect_records([sweep])}
    run = runs[("kd", 4.0, 1)]
    assert run.get("test/acc") == ACC[("kd", 4, 1)]
    assert run.get("num_params") == 77754
    assert run.get("model.name") == "resnet8"
    assert run.get("prune.sparsity") == 0.0
    assert run.get("step") is None
    assert run.get("no.such.key", "absent") == "absent"
    assert len(runs) == 7  # 6 completed + 1 failed; the missing job has no record
    assert runs[FAILED[0], float(FAILED[1]), FAILED[2]].status == "failed"


def test_method_is_sorted_term_names_or_none():
    assert method_name({"distill": {"terms": {"kd": {}, "at": {"weight": 1}}}}) == "at+kd"
    assert method_name({"distill": {"terms": {}}}) == "none"
    assert method_name({}) == "none"


def test_pipeline_steps_get_their_step_name(tmp_path):
    pipeline_dir = tmp_path / "runs" / "quickstart"
    teacher_dir = tmp_path / "cache" / "teachers" / "runs" / "cccd9e8d"  # outside the pipeline
    write_record(teacher_dir, {**distill_record(teacher_dir, "kd", 4, 0, 0.98),
                               "stage": "teacher", "config": {"model": {"name": "resnet20"}}})
    for step, acc in (("student", 0.90), ("kd", 0.93), ("prune", 0.91)):
        write_record(pipeline_dir / step, distill_record(pipeline_dir / step, "kd", 4, 0, acc))
    # "prune" ran but is not listed: the pipeline was killed before it updated its record.
    steps = {name: {"status": "completed", "run_dir": str(d)} for name, d in
             (("teacher", teacher_dir), ("student", pipeline_dir / "student"),
              ("kd", pipeline_dir / "kd"))}
    write_record(pipeline_dir, {"status": "completed", "stage": "pipeline", "name": "quickstart",
                                "overrides": ["experiment=quickstart"], "config": {},
                                "steps": steps})
    broken = tmp_path / "runs" / "broken"
    write_record(broken, {"status": "failed", "stage": "pipeline", "name": "quickstart",
                          "overrides": ["experiment=quickstart", "seed=7"], "config": {},
                          "error": "ConfigError: bad step\nmore", "steps": {}})

    runs = collect_records([tmp_path / "runs"])
    by_step = {r.get("step"): r for r in runs if not r.is_pipeline}
    assert set(by_step) == {"teacher", "student", "kd", "prune"}
    assert by_step["teacher"].get("model.name") == "resnet20"
    assert by_step["kd"].get("test/acc") == 0.93
    table = build_table(runs, ["step"], None, ["test/acc"])
    assert table.row_groups == [("kd",), ("prune",), ("student",), ("teacher",)]
    assert sum(cell.n for cell in table.cells.values()) == 4  # the pipeline records: no rows
    problems = find_problems(runs, [])
    assert [(p.kind, p.overrides, p.error) for p in problems.items] == [
        ("failed", ["experiment=quickstart", "seed=7"], "ConfigError: bad step")]


# -- sweep grid -------------------------------------------------------------------------------

def test_number_spellings_normalise_to_one_value():
    assert normalise_value("4") == normalise_value(4.0) == normalise_value(4) == "4"
    assert normalise_value("0.5") == normalise_value(0.5) != normalise_value(5)
    assert normalise_value("False") == normalise_value(False) == "false"
    assert normalise_value("kd") == "kd" and normalise_value("none") == "none"


def test_grid_of_the_fixture_sweep_has_eight_jobs(sweep):
    grid = load_grid(sweep)
    assert len(grid.jobs) == 8
    assert len({tuple(job) for job in grid.jobs}) == 8
    assert ["data=synthetic", "distill=at", "distill.temperature=1", "seed=1",
            "trainer.max_epochs=1"] in [[f"{k}={v}" for k, v in job] for job in grid.jobs]


def test_grid_merges_sweeper_params_and_expands_range():
    jobs = expected_jobs(["seed=range(0,3)", "a=1"], {"a": "1,2", "b": "x,y"})
    assert len(jobs) == 3 * 1 * 2  # the command line's a=1 wins over params' a=1,2
    assert {dict(job)["seed"] for job in jobs} == {"0", "1", "2"}
    assert {dict(job)["a"] for job in jobs} == {"1"}
    with pytest.raises(ValueError, match="no fixed set"):
        expected_jobs(["lr=interval(0.01,0.1)"])


def test_optuna_sweep_is_not_checked_for_missing_runs(tmp_path):
    sweep_dir = tmp_path / "optuna"
    sweep_dir.mkdir()
    (sweep_dir / "multirun.yaml").write_text(MULTIRUN_YAML.replace(
        "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
        "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"))
    grid = load_grid(sweep_dir)
    assert grid.jobs is None and "OptunaSweeper" in grid.note
    problems = find_problems([], [grid])
    assert problems.items == [] and problems.expected == 0
    assert "missing runs not checked" in problems.notes[0]


def test_missing_and_failed_jobs_are_found_by_their_overrides(sweep):
    problems = find_problems(collect_records([sweep]), find_grids([sweep]))
    assert problems.expected == 8
    listed = {(p.kind, " ".join(p.overrides), p.error) for p in problems.items}
    assert listed == {
        ("missing", ("data=synthetic distill=at distill.temperature=1 seed=1 "
                     "trainer.max_epochs=1"), None),
        ("failed", ("data=synthetic distill=at distill.temperature=4 seed=0 "
                    "trainer.max_epochs=1"), "RuntimeError: boom")}


# -- table ------------------------------------------------------------------------------------

def test_cells_are_mean_and_sample_std_of_completed_runs(sweep):
    table = build_table(collect_records([sweep]), ["method"], "distill.temperature",
                        ["test/acc"])
    for method, temperature in (("kd", 1), ("kd", 4)):
        cell = table.cells[("test/acc", (method,), temperature)]
        assert cell.n == 2
        assert cell.mean == pytest.approx(np.mean(values(method, temperature)))
        assert cell.std == pytest.approx(np.std(values(method, temperature), ddof=1))
    failed_cell = table.cells[("test/acc", ("at",), 4)]  # the failed run's 0.99 stays out
    assert failed_cell.n == 1 and failed_cell.mean == pytest.approx(0.47)
    assert failed_cell.std is None and format_cell(failed_cell, 4) == "0.4700 (n=1)"
    assert table.row_groups == [("at",), ("kd",)] and table.col_values == [1, 4]
    assert table.warnings == []  # only seeds vary inside a cell


def test_mixing_models_in_a_cell_warns_with_the_key(tmp_path):
    for seed, model in ((0, "resnet8"), (1, "resnet20")):
        run_dir = tmp_path / f"{seed}_{model}"
        write_record(run_dir, distill_record(run_dir, "kd", 4, seed, 0.5 + seed / 10,
                                             model=model))
    runs = collect_records([tmp_path])
    mixed = build_table(runs, ["method"], None, ["test/acc"])
    assert len(mixed.warnings) == 1 and mixed.warnings[0].startswith("model.name differs")
    assert build_table(runs, ["method", "model.name"], None, ["test/acc"]).warnings == []


# -- command line -----------------------------------------------------------------------------

def test_cli_writes_markdown_csv_and_plot(sweep, tmp_path, capsys):
    out = tmp_path / "results" / "kd_temperature"
    argv = [str(sweep), "--rows", "method", "--cols", "distill.temperature",
            "--metric", "test/acc", "--metric", "test_best/acc",
            "--plot", "distill.temperature", "--plot", "num_params", "--out", str(out)]
    assert main(argv) == 0
    markdown = out.with_suffix(".md").read_text()
    printed = capsys.readouterr().out

    assert f"`lepton-exp-results {sweep} --rows method" in markdown
    # and the sweep's own command, from its multirun.yaml
    assert ("made by `lepton-exp -m data=synthetic distill=kd,at distill.temperature=1,4 "
            "seed=0,1 trainer.max_epochs=1`") in markdown
    assert "| method | distill.temperature=1 | distill.temperature=4 |" in markdown
    kd4 = values("kd", 4)
    assert f"{np.mean(kd4):.4f} ± {np.std(kd4, ddof=1):.4f} (n=2)" in markdown
    assert "0.4000 (n=1)" in markdown and "0.4000 ±" not in markdown
    assert f"**{np.mean(kd4):.4f}" in markdown  # the best mean of its column
    problems = markdown.split("## Missing or failed runs")[1]
    assert ("**missing**: `data=synthetic distill=at distill.temperature=1 seed=1 "
            "trainer.max_epochs=1`") in problems
    assert ("**failed**: `data=synthetic distill=at distill.temperature=4 seed=0 "
            "trainer.max_epochs=1` — RuntimeError: boom") in problems
    assert "6 completed" in markdown and "8 expected" in markdown
    assert "**missing**" in printed and "RuntimeError: boom" in printed

    with open(out.with_suffix(".csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 4  # 2 metrics x 4 cells
    by_cell = {(r["method"], r["distill.temperature"], r["metric"]): r for r in rows}
    kd4_row = by_cell[("kd", "4", "test/acc")]
    assert float(kd4_row["mean"]) == pytest.approx(np.mean(kd4), abs=1e-12)
    assert float(kd4_row["std"]) == pytest.approx(np.std(kd4, ddof=1), abs=1e-12)
    assert int(kd4_row["n"]) == 2
    assert by_cell[("at", "1", "test_best/acc")]["std"] == ""
    assert float(by_cell[("at", "1", "test_best/acc")]["mean"]) == pytest.approx(0.41)

    for name in ("kd_temperature_test_acc_vs_distill.temperature.png",
                 "kd_temperature_test_acc_vs_num_params.png"):
        png = out.parent / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 10_000
        assert str(png) in printed


@pytest.mark.parametrize("option, key, hint", [
    ("--metric", "test/accc", "did you mean test/acc"),
    ("--rows", "distill.temprature", "did you mean distill.temperature"),
])
def test_unknown_key_exits_2_with_one_line(sweep, tmp_path, capsys, option, key, hint):
    assert main([str(sweep), option, key, "--out", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("lepton-exp-results: error: ")
    assert f"'{key}'" in error and hint in error
    assert not (tmp_path / "x.md").exists()


def test_directory_without_records_exits_2(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("lepton-exp-results: error: no run records")


def test_diff_prints_differing_config_keys(sweep, capsys):
    job_dirs = sorted(sweep.glob("[0-2]_*"))  # jobs kd/T=1/seed 0, kd/T=1/seed 1, kd/T=4/seed 0
    first, second = job_dirs[0], job_dirs[2]
    assert main(["--diff", str(first), str(second)]) == 0
    printed = capsys.readouterr().out
    assert "distill.temperature: 1.0 -> 4.0" in printed
    assert "model.name" not in printed


def test_module_runs_as_a_script_with_default_out(sweep, tmp_path):
    done = subprocess.run([sys.executable, "-m", "lepton_exp.results.cli", str(sweep),
                           "--rows", "method"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    report = tmp_path / "results" / "kd_sweep.md"
    assert report.is_file() and "| method | test/acc |" in report.read_text()
    assert "kd_sweep.csv" in done.stdout


# -- W&B --------------------------------------------------------------------------------------

def test_unreachable_wandb_project_exits_2_with_one_line(monkeypatch, capsys):
    import wandb

    def no_api(*args, **kwargs):
        raise wandb.errors.UsageError("No API key configured. Use `wandb login` to log in.")

    monkeypatch.setattr(wandb, "Api", no_api)
    assert main(["--wandb", "entity/proj"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith("lepton-exp-results: error: W&B project entity/proj unreachable "
                            "(UsageError: No API key configured.")
    assert error.rstrip().endswith("use the sweep directory instead")


def test_wandb_api_runs_become_records(monkeypatch, tmp_path):
    import wandb

    class FakeRun:
        def __init__(self, run_id, state, temperature, acc):
            self.id, self.name, self.state, self.url = run_id, f"run-{run_id}", state, None
            self.config = {"stage": "distill", "seed": 0, "distill.temperature": temperature,
                           "distill.terms.kd.weight": None, "model.name": "resnet8",
                           "_wandb": {"x": 1}}
            self.summary_metrics = {"test/acc": acc, "num_params": 77754, "_runtime": 3}

    class FakeApi:
        def __init__(self, timeout=None):
            pass

        def runs(self, path, filters=None):
            assert path == "entity/proj" and filters == {"group": "g1"}
            return [FakeRun("a", "finished", 1.0, 0.5), FakeRun("b", "finished", 1, 0.7),
                    FakeRun("c", "crashed", 4.0, 0.9)]

    monkeypatch.setattr(wandb, "Api", FakeApi)
    out = tmp_path / "wb"
    assert main(["--wandb", "entity/proj", "--wandb-group", "g1", "--rows", "method",
                 "--cols", "distill.temperature", "--out", str(out)]) == 0
    with open(out.with_suffix(".csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["method"], r["distill.temperature"], r["n"]) for r in rows] == [("kd", "1", "2")]
    assert float(rows[0]["mean"]) == pytest.approx(0.6)
    assert "**failed**" in out.with_suffix(".md").read_text()  # the crashed run


def _write_offline_wandb_run(run_dir: Path, monkeypatch) -> Path:
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(run_dir))
    run_dir.mkdir(parents=True)
    run = wandb.init(mode="offline", dir=str(run_dir), project="lepton-exp", name="kd-t4",
                     config={"stage": "distill", "seed": 3, "distill.temperature": 4.0,
                             "distill.terms.kd.weight": None, "model.name": "resnet8"},
                     settings=wandb.Settings(console="off", x_disable_stats=True))
    for step in range(3):
        run.log({"test/acc": 0.1 * step, "train/loss": 1.0 - 0.1 * step})
    run.summary["test/acc"] = 0.5
    run.summary["num_params"] = 123
    run.finish()
    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    return log


def test_offline_wandb_run_is_read_back(tmp_path, monkeypatch):
    run_dir = tmp_path / "sweep" / "0_kd"
    log = _write_offline_wandb_run(run_dir, monkeypatch)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text("- distill=kd\n- distill.temperature=4\n")

    assert collect_records([tmp_path / "sweep"]) == []  # only with --offline-wandb
    (run,) = collect_records([tmp_path / "sweep"], offline_wandb=True)
    assert run.status == "completed" and run.get("name") == "kd-t4"
    assert run.get("distill.temperature") == 4.0 and run.get("seed") == 3
    assert run.get("method") == "kd" and run.get("model.name") == "resnet8"
    assert run.get("test/acc") == 0.5  # the explicit summary wins over the last logged 0.2
    assert run.get("train/loss") == pytest.approx(0.8)
    assert run.get("num_params") == 123
    assert run.overrides == ["distill=kd", "distill.temperature=4"]

    # A run directory with a summary.json is read from it, never from its W&B log.
    copy = tmp_path / "sweep" / "1_kd"
    shutil.copytree(run_dir, copy)
    write_record(copy, distill_record(copy, "kd", 4, 3, 0.9))
    by_source = {Path(r.source).suffix: r for r in
                 collect_records([tmp_path / "sweep"], offline_wandb=True)}
    assert by_source[".json"].get("test/acc") == 0.9 and len(by_source) == 2

    # A killed run leaves a torn log: what came before the tear is read, status running.
    data = log.read_bytes()
    log.write_bytes(data[: len(data) * 2 // 3])
    (torn,) = collect_records([run_dir], offline_wandb=True)
    assert torn.status == "running" and torn.get("distill.temperature") == 4.0


# -- quantized runs: float and int8 models side by side ---------------------------------------

def quantized_record(run_dir: Path, method: str, seed: int, acc: float, int8_acc: float
                     ) -> dict:
    record = distill_record(run_dir, method, 4, seed, acc)
    record["config"]["quant"] = {"method": "static_int8"}
    record["metrics"].update({
        "test_int8/acc": int8_acc, "quant/size_bytes": 80_000 + seed,
        "quant_float/size_bytes": 310_000 + seed, "quant/latency_ms_b1": 2.0 + seed,
        "quant_float/latency_ms_b1": 3.0 + seed})
    record["quant"] = {"method": "static_int8"}
    return record


def test_int8_views_put_the_int8_model_beside_the_float_one(tmp_path):
    accuracy = {0: (0.60, 0.58), 1: (0.64, 0.61)}
    for seed, (acc, int8_acc) in accuracy.items():
        run_dir = tmp_path / f"{seed}_kd"
        write_record(run_dir, quantized_record(run_dir, "kd", seed, acc, int8_acc))
    plain = tmp_path / "2_at"  # not quantized: float only, size from the record
    write_record(plain, distill_record(plain, "at", 4, 0, 0.5))
    assert len(collect_records([tmp_path])) == 3  # no views unless asked for
    runs = collect_records([tmp_path], int8_views=True)
    assert sorted(run.precision for run in runs) == ["float32", "float32", "float32", "int8",
                                                    "int8"]
    table = build_table(runs, ["method", "precision"], None,
                        ["test/acc", "size_bytes", "latency_ms_b1"])
    cell = table.cells
    assert cell[("test/acc", ("kd", "int8"), None)].mean == pytest.approx(0.595)
    assert cell[("test/acc", ("kd", "float32"), None)].mean == pytest.approx(0.62)
    assert cell[("size_bytes", ("kd", "int8"), None)].mean == pytest.approx(80_000.5)
    assert cell[("size_bytes", ("kd", "float32"), None)].mean == pytest.approx(310_000.5)
    assert cell[("latency_ms_b1", ("kd", "int8"), None)].mean == pytest.approx(2.5)
    assert cell[("size_bytes", ("at", "float32"), None)].mean == 313776  # model_size_bytes
    assert ("latency_ms_b1", ("at", "float32"), None) not in cell  # never measured
    assert table.warnings == []


def test_cli_plots_accuracy_against_size_for_float_and_int8(tmp_path, capsys):
    for seed in (0, 1):
        run_dir = tmp_path / "runs" / f"{seed}_kd"
        write_record(run_dir, quantized_record(run_dir, "kd", seed, 0.6, 0.58))
    out = tmp_path / "results" / "quant"
    assert main([str(tmp_path / "runs"), "--rows", "precision", "--metric", "test/acc",
                 "--metric", "size_bytes", "--plot", "size_bytes", "--out", str(out)]) == 0
    markdown = out.with_suffix(".md").read_text()
    assert "| int8 |" in markdown and "| float32 |" in markdown
    png = out.parent / "quant_test_acc_vs_size_bytes.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("machine", [None, "the 2-core test VM"])
def test_a_table_written_into_results_records_what_made_it_and_where(sweep, tmp_path,
                                                                     machine):
    results = tmp_path / "results"
    results.mkdir()
    (results / "provenance.json").write_text("{}")
    argv = [str(sweep), "--rows", "method", "--out", str(results / "kd_table")]
    assert main(argv + (["--machine", machine] if machine else [])) == 0
    entry = json.loads((results / "provenance.json").read_text())["kd_table"]
    assert entry["files"] == ["kd_table.csv", "kd_table.md"]
    assert entry.get("machine") == machine
