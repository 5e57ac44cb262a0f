"""A full-scale benchmark section keeps its figures in results/benchmarks/<key>.json with its
commit in results/provenance.json, so BENCHMARKS.md can be assembled from sections run in
different sessions, and a section whose code changed since is found stale."""

from __future__ import annotations

import json

import pytest

from benchmarks import __main__ as report_main
from benchmarks import common
from lepton_exp.results import provenance
from tests.git_repo import commit, git


def fake_section(options: common.Options) -> common.Section:
    return common.Section(key="fake", title="A fake section", body="| a | 1 |",
                          targets=[common.Target("a", "1", "≤ 2", True)])


fake_section.__module__ = "benchmarks.fake"


@pytest.fixture
def repo(tmp_path, monkeypatch):
    git(tmp_path, "init", "-q")
    monkeypatch.setattr(common, "REPO", tmp_path)
    monkeypatch.setattr(report_main, "REPO", tmp_path)
    return tmp_path


def test_a_full_section_is_kept_in_results_with_its_commit_and_goes_stale_with_its_script(repo):
    made = commit(repo, "benchmarks/fake.py", "x = 1\n")
    options = common.Options("full", repo / "data", repo / "work")
    common.run_section(fake_section, options)
    saved = json.loads((repo / "results" / "benchmarks" / "fake.json").read_text())
    assert saved["commit"] == made[:10] and saved["body"] == "| a | 1 |"
    assert saved["machine"]["cores"] and saved["targets"][0]["met"] is True
    entry = provenance.load(repo / "results")["benchmark_fake"]
    assert entry["made_at"] == made and entry["files"] == ["benchmarks/fake.json"]
    assert "--only fake" in entry["command"] and "benchmarks/fake.py" in entry["code"]
    assert "lepton_exp/export" not in entry["code"]  # only a section that exports needs it
    assert provenance.uncovered(repo / "results") == []  # the subfolder's file is named
    commit(repo, "benchmarks/other.py", "y = 1\n")  # another section's script: still fresh
    assert provenance.stale(repo) == {}
    commit(repo, "benchmarks/fake.py", "x = 2\n")
    assert provenance.stale(repo) == {"benchmark_fake": ["benchmarks/fake.py"]}


def test_a_section_depends_on_the_extra_code_its_script_names(repo, monkeypatch):
    import types

    module = types.ModuleType("benchmarks.fake")
    module.EXTRA_CODE = ("lepton_exp/export",)  # as benchmarks/deploy.py names it
    monkeypatch.setitem(__import__("sys").modules, "benchmarks.fake", module)
    commit(repo, "benchmarks/fake.py", "x = 1\n")
    common.run_section(fake_section, common.Options("full", repo / "data", repo / "work"))
    assert "lepton_exp/export" in provenance.load(repo / "results")["benchmark_fake"]["code"]
    commit(repo, "lepton_exp/export/onnx.py", "y = 1\n")
    assert provenance.stale(repo) == {"benchmark_fake": ["lepton_exp/export/onnx.py"]}


def test_uncommitted_code_is_recorded_as_such_and_smoke_sections_stay_out_of_results(repo):
    commit(repo, "benchmarks/fake.py", "x = 1\n")
    (repo / "benchmarks" / "fake.py").write_text("x = 3\n")
    common.run_section(fake_section, common.Options("full", repo, repo / "work"))
    entry = provenance.load(repo / "results")["benchmark_fake"]
    assert entry["made_at"].endswith("+dirty")
    assert list(provenance.stale(repo)) == ["benchmark_fake"]  # unknown code: stale
    common.run_section(fake_section, common.Options("smoke", repo, repo / "work"))
    assert (repo / "work" / "sections" / "fake.json").is_file()
    assert json.loads((repo / "results" / "benchmarks" / "fake.json").read_text())[
        "commit"].endswith("(uncommitted changes)")  # the full one, untouched by smoke


def test_the_report_is_assembled_from_the_kept_sections(repo, monkeypatch):
    commit(repo, "benchmarks/fake.py", "x = 1\n")
    monkeypatch.setattr(report_main, "SECTIONS", {"fake": fake_section, "later": fake_section})
    monkeypatch.setattr("sys.argv", ["benchmarks", "--only", "fake"])
    report_main.main()
    text = (repo / "results" / "BENCHMARKS.md").read_text()
    assert "## A fake section" in text and "| a | 1 |" in text
    assert "**Incomplete**: not run yet: later" in text
    assert "BENCHMARKS" in provenance.load(repo / "results")
    (repo / "results" / "BENCHMARKS.md").unlink()
    monkeypatch.setattr("sys.argv", ["benchmarks", "--only"])  # no key: the report alone
    report_main.main()
    assert "| a | 1 |" in (repo / "results" / "BENCHMARKS.md").read_text()


def test_a_section_that_reuses_finished_runs_is_recorded_at_the_oldest_runs_commit(repo):
    """A section skips the runs its work dir has finished (a sweep's resume), whatever
    commit made them: its figures are that commit's, and go stale with its changes."""
    old = commit(repo, "lepton_exp/training/step.py", "x = 1\n")
    new = commit(repo, "lepton_exp/training/step.py", "x = 2\n")
    runs = repo / "work" / "runs"
    for name, made, started in (("a", old, "2026-12-01T10:00"), ("b", new, "2026-12-02T10:00")):
        (runs / name).mkdir(parents=True)
        (runs / name / "summary.json").write_text(json.dumps(
            {"status": "completed", "started_at": started,
             "git": {"commit": made, "dirty": False}}))

    def reusing_section(options: common.Options) -> common.Section:
        assert len(common.records(options.work_dir / "runs")) == 2
        return fake_section(options)

    reusing_section.__module__ = "benchmarks.fake"
    common.run_section(reusing_section, common.Options("full", repo, repo / "work"))
    entry = provenance.load(repo / "results")["benchmark_fake"]
    assert entry["made_at"] == old
    saved = json.loads((repo / "results" / "benchmarks" / "fake.json").read_text())
    assert saved["commit"] == new[:10] and saved["runs_made_at"] == old
    assert provenance.stale(repo) == {"benchmark_fake": ["lepton_exp/training/step.py"]}
    common.run_section(fake_section, common.Options("full", repo, repo / "work"))
    assert provenance.load(repo / "results")["benchmark_fake"]["made_at"] == new
