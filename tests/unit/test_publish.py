"""Image publication: leftovers of dead processes are removed or put back (no QEMU needed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from nestor.images import publish


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def tree(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "data").write_text(text)
    return path


def test_replacing_swaps_in_one_step_and_leaves_nothing(tmp_path: Path) -> None:
    final = tree(tmp_path / "img", "old")
    with publish.Staging(tmp_path, "img") as stage:
        (stage / "data").write_text("new")
        publish.publish(stage, final)
    assert (final / "data").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["img"]


def test_leftovers_of_dead_processes_go_and_a_set_aside_image_comes_back(tmp_path: Path) -> None:
    pid = dead_pid()
    tree(tmp_path / f".a-old-{pid}-1", "a-old")  # killed between setting aside and renaming in: no `a`
    tree(tmp_path / "b", "b-new")
    tree(tmp_path / f".b-old-{pid}-2", "b-old")  # killed before removing the old tree
    tree(tmp_path / f".c-build-{pid}-xyz", "c-stage")
    mine = tree(tmp_path / f".d-build-{os.getpid()}-xyz", "d-stage")  # a live build: kept
    handled = publish.remove_leftovers(tmp_path)
    assert len(handled) == 3
    assert (tmp_path / "a" / "data").read_text() == "a-old"
    assert (tmp_path / "b" / "data").read_text() == "b-new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a", "b", mine.name])
