"""The guides stay true to the code: every command they show exists and answers --help, every
relative link resolves, every concept guide follows the one template, and running the scripts that
write plots leaves every tracked file as it was.

A renamed script or a moved image breaks the build here, not the learner.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONCEPTS = ["Threading", "WebSockets", "RealTimeChat", "TwoPhaseCommit", "UniqueIdGeneration",
            "SimpleCDN", "ConsistentHashing", "DistributedLocking"]
CONCEPT_GUIDES = [ROOT / "BlockingQueue.md"] + [ROOT / c / "README.md" for c in CONCEPTS]
ALL_GUIDES = [ROOT / "README.md", ROOT / "common" / "README.md", *CONCEPT_GUIDES]
TEMPLATE = ["The problem", "The idea", "Run it", "What you will see", "How it is built",
            "Guarantees and failure modes", "In real systems", "Measured", "Tests", "Further reading"]

# `python -m Package.module ...` or `python script.py ...`, as a line of a shell example or inline code.
COMMAND = re.compile(r"(?:^|[\s`$(])python3? (-m [A-Za-z_][\w.]*|[\w/]+\.py)\b")


def existing_guides() -> list[Path]:
    return [guide for guide in ALL_GUIDES if guide.exists()]


def commands_in(guide: Path) -> set[str]:
    return {match.group(1) for match in COMMAND.finditer(guide.read_text())}


def all_commands() -> list[str]:
    found: set[str] = set()
    for guide in existing_guides():
        found |= commands_in(guide)
    return sorted(found)


def script_path(command: str) -> Path:
    if command.startswith("-m "):
        return ROOT / (command[3:].replace(".", "/") + ".py")
    return ROOT / command


@pytest.mark.parametrize("guide", CONCEPT_GUIDES, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_concept_has_a_guide_in_the_template(guide):
    assert guide.exists(), f"{guide.relative_to(ROOT)} is missing"
    headings = re.findall(r"^## (.+?)\s*$", guide.read_text(), re.MULTILINE)
    in_template = [h for h in headings if h in TEMPLATE]
    assert in_template == TEMPLATE, (
        f"{guide.relative_to(ROOT)}: the template's ## sections, in order, are {TEMPLATE}; found {headings}")


def test_the_map_links_every_guide():
    text = (ROOT / "README.md").read_text()
    for guide in CONCEPT_GUIDES:
        assert str(guide.relative_to(ROOT)) in text, f"README.md should link {guide.relative_to(ROOT)}"


@pytest.mark.parametrize("guide", existing_guides(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(guide):
    text = guide.read_text()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (guide.parent / target.split("#")[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert not broken, f"{guide.relative_to(ROOT)} links to files that do not exist: {broken}"


@pytest.mark.parametrize("command", all_commands())
def test_every_command_a_guide_shows_exists_and_answers_help(command):
    path = script_path(command)
    assert path.exists(), f"a guide shows `python {command}`, but {path.relative_to(ROOT)} does not exist"
    argv = [sys.executable, *command.split(), "--help"]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"python {command} --help failed:\n{result.stderr[-2000:]}"
    assert "usage:" in result.stdout.lower()


# --- following a guide never changes a tracked file ---------------------------------------------------

# Scripts that write plots or data, run with their defaults (shortened where the defaults take minutes).
PLOT_SCRIPTS = [
    ["BlockingQueue.py", "demo"],
    ["-m", "Threading.compare", "--repeat", "1", "--n", "20000", "--workers", "1", "2",
     "--requests", "4", "--delay-ms", "5"],
    ["-m", "ConsistentHashing.simulate"],
    ["-m", "ConsistentHashing.compare", "--shards", "100", "--keys", "5000", "--remove", "5",
     "--add", "5"],
    ["-m", "UniqueIdGeneration.sortable_keys", "--rows", "2000"],
    ["-m", "ConsistentHashing.redis_cluster", "--keys", "2000"],
    ["-m", "TwoPhaseCommit.diagrams"],
    ["-m", "DistributedLocking.partition"],
    ["-m", "common.faultproxy_demo"],
    ["-m", "RealTimeChat.screenshot"],
]


@pytest.fixture(scope="module")
def scratch_clone(tmp_path_factory) -> Path:
    """A clone of the working tree as it is now (tracked files + changes), so runs cannot touch ours."""
    clone = tmp_path_factory.mktemp("clone") / "repo"
    shutil.copytree(ROOT, clone, ignore=shutil.ignore_patterns(".venv", "out", ".git", "__pycache__",
                                                               ".pytest_cache", ".hypothesis"))
    subprocess.run(["git", "init", "-q"], cwd=clone, check=True)
    subprocess.run(["git", "add", "-A"], cwd=clone, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "snapshot"],
                   cwd=clone, check=True)
    return clone


@pytest.mark.parametrize("argv", PLOT_SCRIPTS, ids=lambda a: " ".join(a))
def test_running_a_script_with_its_defaults_changes_no_tracked_file(argv, scratch_clone):
    if not script_path(f"-m {argv[1]}" if argv[0] == "-m" else argv[0]).exists():
        pytest.fail(f"{argv} no longer exists: update PLOT_SCRIPTS")
    if "RealTimeChat.screenshot" in argv and not Path("/usr/bin/chromium").exists():
        pytest.skip("no Chromium at /usr/bin/chromium (bash .ci/run installs it)")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, *argv], cwd=scratch_clone, capture_output=True, text=True,
                            timeout=240, env=env, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-2000:]
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=scratch_clone,
                             capture_output=True, text=True, check=True).stdout
    subprocess.run(["git", "checkout", "-q", "--", "."], cwd=scratch_clone, check=True)
    assert changed == "", f"python {' '.join(argv)} changed tracked files:\n{changed}"
    assert "out/" in result.stdout + result.stderr, "a script that writes files should say where"
