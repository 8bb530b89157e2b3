"""issue 18: nestor takes over only a directory that is new, empty or already a nestor home (it holds
nestor.db); a read-only command creates nothing; nestor never changes the modes of what it did not make.
Through the real CLI (`python -m nestor`), on real directories holding a script with its run bit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nestor import paths


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nestor", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, check=False)


def snapshot(root: Path) -> dict[str, int]:
    """Every path below root (root included) with its mode."""
    found = {".": root.lstat().st_mode}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = path.lstat().st_mode
    return found


@pytest.fixture
def projects(tmp_path: Path) -> Path:
    """A user's directory: a script with its run bit, a shared subdirectory, a readable file."""
    root = tmp_path / "projects"
    (root / "tools").mkdir(parents=True)
    script = root / "tools" / "build.sh"
    script.write_text("#!/bin/sh\necho built\n")
    script.chmod(0o755)
    (root / "README").write_text("mine\n")
    (root / "README").chmod(0o644)
    root.chmod(0o755)
    (root / "tools").chmod(0o755)
    return root


def refused(result: subprocess.CompletedProcess[str], code: int) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("args", [["vm", "list"], ["vm", "show", "x"], ["switch", "list"], ["host", "list"],
                                  ["vm", "start", "x"], ["image", "list"]])
def test_a_command_that_creates_nothing_leaves_a_foreign_directory_alone(projects: Path, args: list[str]) -> None:
    before = snapshot(projects)
    line = refused(run("--home", str(projects), *args), 3)
    assert f"cannot use home directory {projects}: it is not a nestor home" in line
    assert snapshot(projects) == before  # no nestor.db, no net/, every mode as it was
    assert os.access(projects / "tools" / "build.sh", os.X_OK)


def test_nestor_home_from_the_environment_is_refused_the_same_way(projects: Path) -> None:
    before = snapshot(projects)
    refused(run("vm", "list", env={"NESTOR_HOME": str(projects)}), 3)
    assert snapshot(projects) == before


def test_a_creating_command_does_not_take_over_a_directory_with_files_in_it(projects: Path) -> None:
    before = snapshot(projects)
    line = refused(run("--home", str(projects), "vm", "new", "a", "--kernel", "/bin/true"), 2)
    assert "not a nestor home (no nestor.db) and not empty ('README', 'tools')" in line
    assert snapshot(projects) == before


def test_a_read_only_command_creates_nothing_in_an_empty_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o755)
    empty.chmod(0o755)
    refused(run("--home", str(empty), "vm", "list"), 3)
    assert list(empty.iterdir()) == [] and empty.stat().st_mode & 0o777 == 0o755


def test_a_new_or_empty_directory_becomes_a_home_and_a_home_is_used(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run("--home", str(empty), "vm", "new", "a", "--kernel", "/bin/true").returncode == 0
    assert paths.is_home(empty) and empty.stat().st_mode & 0o777 == 0o700
    assert run("--home", str(empty), "vm", "list").returncode == 0
    fresh = tmp_path / "new" / "home"
    assert run("--home", str(fresh), "vm", "new", "a", "--kernel", "/bin/true").returncode == 0
    assert paths.is_home(fresh)


def test_tightening_a_loose_home_touches_only_what_nestor_made(tmp_path: Path) -> None:
    """An older nestor's 0755 home is tightened, but a file the user put in it keeps its mode."""
    home = tmp_path / "home"
    assert run("--home", str(home), "vm", "new", "a", "--kernel", "/bin/true").returncode == 0
    mine = home / "notes.sh"
    mine.write_text("#!/bin/sh\n")
    mine.chmod(0o755)
    (home / "mine").mkdir()
    (home / "mine").chmod(0o755)
    for path, loose in ((home, 0o755), (home / "vms", 0o755), (home / paths.DB_NAME, 0o644)):
        os.chmod(path, loose)
    assert run("--home", str(home), "vm", "list").returncode == 0
    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / "vms").stat().st_mode & 0o777 == 0o700
    assert (home / paths.DB_NAME).stat().st_mode & 0o777 == 0o600
    assert mine.stat().st_mode & 0o777 == 0o755 and (home / "mine").stat().st_mode & 0o777 == 0o755


def test_a_file_given_as_home_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    refused(run("--home", str(file), "vm", "new", "a", "--kernel", "/bin/true"), 2)
    assert file.read_text() == "x"


@pytest.mark.parametrize("args", [["serve", "--socket", "SOCK"], ["token", "new", "ci"]])
def test_serve_and_token_new_do_not_take_over_a_foreign_directory(projects: Path, tmp_path: Path, args: list[str]) -> None:
    before = snapshot(projects)
    args = [str(tmp_path / "s.sock") if a == "SOCK" else a for a in args]
    refused(run("--home", str(projects), *args), 2)
    assert snapshot(projects) == before
