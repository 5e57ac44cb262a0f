"""Every file of results/ says which commit and command made it, and a figure whose code
changed since is found (results/provenance.json, lepton_exp.results.provenance)."""

from __future__ import annotations

import json
from pathlib import Path

from lepton_exp.results import provenance
from tests.git_repo import commit, git

REPO = Path(__file__).resolve().parents[1]


def test_a_figure_is_stale_once_its_code_changes_and_fresh_once_checked_again(tmp_path):
    git(tmp_path, "init", "-q")
    results = tmp_path / "results"
    made = commit(tmp_path, "lepton_exp/distill/kd.py", "loss = 1\n")
    results.mkdir()
    provenance.record(results, "kd", ["kd.md"], "lepton-exp distill=kd", made,
                      code=("lepton_exp/distill",), machine="a 2-core VM")
    assert provenance.load(results)["kd"]["machine"] == "a 2-core VM"  # figures are per machine
    (results / "kd.md").write_text("| kd | 0.9 |\n")
    assert provenance.stale(tmp_path) == {} and provenance.uncovered(results) == []
    commit(tmp_path, "README.md", "docs only\n")  # outside the code: still fresh
    assert provenance.stale(tmp_path) == {}
    changed = commit(tmp_path, "lepton_exp/distill/kd.py", "loss = 2\n")
    assert provenance.stale(tmp_path) == {"kd": ["lepton_exp/distill/kd.py"]}
    assert provenance.unacknowledged(tmp_path) == {"kd": ["lepton_exp/distill/kd.py"]}
    entries = provenance.load(results)
    entries["kd"]["known_stale"] = {"at": changed, "why": "a 3-hour run"}
    (results / provenance.PROVENANCE).write_text(json.dumps(entries))
    assert provenance.unacknowledged(tmp_path) == {}  # known, and said so
    commit(tmp_path, "lepton_exp/distill/at.py", "loss = 3\n")  # changed again after that
    assert provenance.unacknowledged(tmp_path) == {"kd": ["lepton_exp/distill/at.py"]}
    entries["kd"]["checked_at"] = git(tmp_path, "rev-parse", "HEAD")  # re-run: same figures
    (results / provenance.PROVENANCE).write_text(json.dumps(entries))
    assert provenance.stale(tmp_path) == {}
    (results / "at.md").write_text("| at | 0.8 |\n")  # a file nothing says how it was made
    assert provenance.uncovered(results) == ["at.md"]
    entries["kd"]["made_at"], entries["kd"]["checked_at"] = f"{made}+dirty", None
    (results / provenance.PROVENANCE).write_text(json.dumps(entries))
    assert list(provenance.stale(tmp_path)) == ["kd"]  # uncommitted code: unknown


def test_every_results_file_has_its_command_and_commit_and_none_is_silently_stale():
    results = REPO / "results"
    assert provenance.uncovered(results) == []
    for name, entry in provenance.load(results).items():
        assert entry["command"] and entry["made_at"] and entry["code"], name
    if not (REPO / ".git").exists():
        return  # an installed copy without history cannot tell
    stale = provenance.unacknowledged(REPO)
    assert stale == {}, ("results made from code that changed since (regenerate them, or "
                         "say why not in known_stale): " + json.dumps(stale)[:2000])


def test_a_run_records_its_checkout_dirty_for_code_changes_but_not_for_results(tmp_path):
    from lepton_exp.tracking.record import git_state

    def state() -> dict:
        git_state.cache_clear()  # (asked once per process: the checkout does not change)
        return git_state(tmp_path / "lepton_exp")

    git(tmp_path, "init", "-q")
    commit(tmp_path, "lepton_exp/train.py", "x = 1\n")
    made = commit(tmp_path, "results/table.md", "| a |\n")
    assert state() == {"commit": made, "dirty": False}
    (tmp_path / "results" / "table.md").write_text("| b |\n")  # a benchmark rewrote it
    assert state()["dirty"] is False
    (tmp_path / "lepton_exp" / "train.py").write_text("x = 22\n")  # the code that runs
    assert state()["dirty"] is True


def test_the_commit_of_a_set_of_runs_is_the_oldest_runs_and_says_what_it_cannot_vouch_for():
    def run(started: str, commit: str | None, dirty: bool | None = False) -> dict:
        return {"started_at": started, **({"git": {"commit": commit, "dirty": dirty}}
                                          if commit else {})}

    assert provenance.runs_commit([run("2026-12-02", "b"), run("2026-12-01", "a")]) == "a"
    assert provenance.runs_commit([run("2026-12-01", "a"), run("2026-12-02", "b", True)]) \
        == "a+dirty"
    # git could not say whether the code was changed: not vouched for as clean
    assert provenance.runs_commit([run("2026-12-01", "a", None)]) == "a+dirty"
    # a run that does not say which commit made it: nothing vouches for the set
    assert provenance.runs_commit([run("2026-12-01", None), run("2026-12-02", "b")]) == "unknown"
    assert provenance.runs_commit([]) == "unknown"
