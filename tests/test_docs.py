"""The documentation: the site builds with no broken link, the README stays short and its links
resolve, and the command lines the pages show pass the CLI's own config check."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
README_LIMIT = 12_000  # bytes: what a newcomer reads; the rest lives in docs/
# [text](target) and ![alt](target); the target up to whitespace or the closing parenthesis
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def test_the_site_builds_strictly(tmp_path):
    """`mkdocs build --strict`: a link to a missing page or heading fails the build."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    assert (tmp_path / "index.html").is_file()


def test_the_readme_is_short():
    size = len(README.read_bytes())
    assert size < README_LIMIT, (f"README.md is {size} bytes (limit {README_LIMIT}): move the "
                                 "how-to and reference into docs/ and link to it")


def relative_links(markdown: str) -> list[str]:
    """The link targets of ``markdown`` that point into the repository (no scheme, no bare
    anchor), without their anchors."""
    targets = []
    for target in MARKDOWN_LINK.findall(markdown):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # https:, mailto:, an anchor in the same page
        targets.append(target.split("#", 1)[0])
    return targets


def test_relative_links_are_found_in_markdown():
    text = "[a](docs/x.md) [b](https://hydra.cc) [c](#here) ![d](results/p.png) [e](y.md#part)"
    assert relative_links(text) == ["docs/x.md", "results/p.png", "y.md"]


def test_every_relative_link_in_the_readme_points_to_a_file():
    targets = relative_links(README.read_text())
    assert targets, "README.md links to no docs page"
    missing = [target for target in targets if not (REPO / target).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def documented_commands(markdown: str) -> list[str]:
    """The `lepton-exp ...` command lines in the ```bash blocks of ``markdown``, continuation
    lines joined, environment assignments and trailing comments dropped."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.S | re.M):
        for line in re.sub(r"\s*\\\n\s*", " ", block).splitlines():
            line = re.sub(r"\s+#.*$", "", line.strip())
            while re.match(r"^[A-Z_]+=\S+\s", line):  # LEPTON_DATA_DIR=... lepton-exp ...
                line = line.split(None, 1)[1]
            if line.startswith("lepton-exp "):
                commands.append(line)
    return commands


def test_documented_commands_are_found_in_bash_blocks():
    text = ("```bash\nLEPTON_DATA_DIR=d lepton-exp -m a=1,2 \\\n    b=3   # why\n"
            "python x.py\n```\n```\nlepton-exp not.bash=1\n```\n")
    assert documented_commands(text) == ["lepton-exp -m a=1,2 b=3"]


@pytest.mark.slow
def test_documented_command_lines_pass_the_config_check(tmp_path):
    """Every `lepton-exp` command line of README.md and docs/ composes and validates, sweeps
    included (the CLI's preflight, in-process: nothing trains). Placeholders (`<dir>`) become
    a path; elided lines (`...`) and the worked example's method, which is not part of the
    repository (docs/own-method.md), are left out."""
    from lepton_exp.cli import flags_first
    from lepton_exp.config.preflight import PreflightError, preflight

    pages = [README, *sorted((REPO / "docs").glob("*.md"))]
    failures, checked = [], 0
    for page in pages:
        for command in documented_commands(page.read_text()):
            if "..." in command or "logit_mse" in command:
                continue
            argv = shlex.split(re.sub(r"<[^>]*>", str(tmp_path), command))[1:]
            if argv[0] in ("--help", "--version"):
                continue
            checked += 1
            try:
                preflight(flags_first(argv))
            except PreflightError as error:
                failures.append(f"{page.name}: {command}\n    -> {error}")
    assert checked > 20
    assert not failures, "documented commands that fail:\n" + "\n".join(failures)
