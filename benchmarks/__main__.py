"""All benchmarks, one command -> results/BENCHMARKS.md.

    python -m benchmarks                     # everything at full scale (~75 min on 2 cores)
    python -m benchmarks --only cifar_prune  # re-run one section; the others are kept
    python -m benchmarks --scale smoke       # minutes: checks the scripts (-> work dir)
    python -m benchmarks --only              # no key: only re-assembles the report

Each section keeps its result in results/benchmarks/<key>.json (smoke: in the work dir),
with its commit in results/provenance.json (`benchmark_<key>`); the report is assembled
from those, so a re-run of one section keeps the others' figures (their dates and
commits are printed with them), and sections can be run in different sessions.
"""

from __future__ import annotations

import json
import sys
import time
import traceback

from benchmarks import (cifar_distill, cifar_prune, cifar_zoo, deploy, gpu, image_loader,
                        overhead, peer_torchdistill, quantization, sst2, sweep_throughput,
                        teacher_output_cache)
from benchmarks.common import (REPO, Section, Target, machine_info, parse_options,
                               provenance_commit, run_section, sections_dir)

# In report order. Timing-sensitive sections first, before the long runs heat the machine.
SECTIONS = {"overhead": overhead.run, "gpu": gpu.run, "cache": teacher_output_cache.run,
            "sweep": sweep_throughput.run, "cifar_distill": cifar_distill.run,
            "cifar_zoo": cifar_zoo.run,
            "cifar_prune": cifar_prune.run, "peer": peer_torchdistill.run, "sst2": sst2.run,
            "quant": quantization.run,  # quantizes models that cifar_distill and sst2 trained
            "deploy": deploy.run,  # exports models that cifar_distill and cifar_prune trained
            "image_loader": image_loader.run}


def load(directory, key: str) -> dict | None:
    path = directory / f"{key}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _machine(result: dict) -> str:
    machine = result.get("machine")
    return (f" on {machine['cpu']} ({machine['cores']} cores, {machine['torch threads']} "
            f"torch threads, GPU {machine['gpu']})" if machine else "")


def _stale_sections(options) -> dict[str, list[str]]:
    """Section key -> the code changed since it ran (results/provenance.json)."""
    if options.smoke:
        return {}
    from lepton_exp.results import provenance

    return {name.removeprefix("benchmark_"): changed
            for name, changed in provenance.stale(REPO).items()
            if name.startswith("benchmark_")}


def _short(commit: str) -> str:
    """A provenance commit as the report prints it (``+dirty``: uncommitted changes)."""
    return commit[:10] + (" with uncommitted changes" if commit.endswith("+dirty") else "")


def _made_at(result: dict) -> str:
    """The commit of a section's figures: its runs' where it reused finished ones."""
    if result.get("runs_made_at"):
        return f"{_short(result['runs_made_at'])} (runs; section {result['commit'].split()[0]})"
    return result["commit"].split()[0]


def _run_line(result: dict, changed: list[str] | None) -> list[str]:
    note = f" ({result['note']})" if result.get("note") else ""
    made = result.get("runs_made_at")
    reused = f" (it reused finished runs made at {_short(made)})" if made else ""
    line = [f"_Run {result['date']} at commit {result['commit']}{reused}, "
            f"{result['seconds'] / 60:.1f} min{_machine(result)}{note}._", ""]
    if changed:
        shown = ", ".join(f"`{path}`" for path in changed[:4])
        line += [f"**Stale**: code these figures depend on changed since ({len(changed)} "
                 f"file(s): {shown}{', ...' if len(changed) > 4 else ''}); re-run: "
                 f"`python -m benchmarks --only {result['key']}`.", ""]
    return line


def report(options, results: dict[str, dict]) -> str:
    machine = machine_info()
    stale = _stale_sections(options)
    targets = [(r, Target(**t)) for r in results.values() for t in r["targets"]]
    missing = [k for k in SECTIONS if k not in results]
    lines = [
        "# Benchmarks", "",
        "Every figure below was measured by the scripts in `benchmarks/`; nothing is typed in "
        "by hand. Each section says when, at which commit and on which machine it ran, and "
        "is marked **stale** when code it depends on changed since. Absolute times on a "
        "shared 2-core machine are noisy: compare the ratios, each taken within one run.", "",
        f"Regenerate: `python -m benchmarks` (or `make benchmarks`) from the repo, "
        f"{'`--scale smoke` ' if options.smoke else ''}with the data in "
        "`../shared/data` (`--data-dir`); one section: `--only <key>` (its figures are kept "
        "in `results/benchmarks/<key>.json`); the report alone: `--only`.", "",
        "Report assembled with: " + ", ".join(f"{k} {v}" for k, v in machine.items()) + ".",
        "",
        *([f"**Incomplete**: not run yet: {', '.join(missing)}.", ""] if missing else []),
        *([f"**Stale sections**: {', '.join(k for k in SECTIONS if k in stale and k in results)}"
           ".", ""] if set(stale) & set(results) else []),
        "## Targets", "",
        "| target | measured | wanted | met | section | made at |",
        "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {t.name} | {t.measured} | {t.wanted} | {'yes' if t.met else '**no**'} | "
              f"[{r['title']}](#{r['key']}) | {_made_at(r)}"
              f"{' (stale)' if r['key'] in stale else ''} |" for r, t in targets]
    for key in SECTIONS:
        result = results.get(key)
        if result is None:
            lines += ["", f"## {key}", "", "Not run yet."]
            continue
        lines += ["", f'<a id="{result["key"]}"></a>', f"## {result['title']}", "",
                  *_run_line(result, stale.get(key)), result["body"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    options, only = parse_options(description=__doc__.splitlines()[0])
    unknown = set(only or []) - set(SECTIONS)
    if unknown:
        sys.exit(f"unknown section(s) {', '.join(sorted(unknown))}: use {', '.join(SECTIONS)}")
    failed = []
    for key, run in SECTIONS.items():
        if only is not None and key not in only:
            continue
        print(f"[benchmarks] {key} ...", flush=True)
        started = time.perf_counter()
        try:
            section: Section = run_section(run, options)
        except Exception as error:  # noqa: BLE001 - the other sections still run
            traceback.print_exc()
            failed.append(f"{key}: {error}")
            continue
        print(f"[benchmarks] {key} done in {time.perf_counter() - started:.0f} s: "
              + "; ".join(f"{t.name}: {t.measured}" for t in section.targets), flush=True)
    directory = sections_dir(options)
    results = {key: r for key in SECTIONS if (r := load(directory, key)) is not None}
    out = (REPO / "results" / "BENCHMARKS.md") if not options.smoke else (
        options.work_dir / "BENCHMARKS.md")
    out.write_text(report(options, results))
    if not options.smoke:  # the sections' own entries say which code made their figures
        from lepton_exp.results import provenance

        provenance.record(REPO / "results", "BENCHMARKS", [out.name],
                          "python -m benchmarks (make benchmarks); one section: --only <key>; "
                          "the report alone, from results/benchmarks/: --only",
                          provenance_commit(), code=("benchmarks/__main__.py",))
    print(f"[benchmarks] wrote {out}")
    if failed:
        sys.exit("failed sections:\n  " + "\n  ".join(failed))


if __name__ == "__main__":
    main()
