"""`nestor lab …` on a home that does not exist: a read-only lab command (status, list, plan,
inventory) and a changing one on a lab that cannot exist there refuse it and create nothing,
as `vm list` does (cli/context.py CREATING); a bad lab file is named before any home is opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import nestor_inprocess


@pytest.mark.parametrize("args", [("lab", "status"), ("lab", "list"), ("lab", "list", "-o", "json"),
                                  ("lab", "status", "x", "-o", "json"), ("lab", "inventory", "x"),
                                  ("lab", "save", "x"), ("lab", "restore", "x"), ("lab", "down", "x"),
                                  ("vm", "list")])
def test_a_lab_command_on_a_missing_home_creates_nothing(tmp_path: Path, args: tuple[str, ...]) -> None:
    home = tmp_path / "nonexistent" / "x"
    result = nestor_inprocess(home, *args, check=False)
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == f"error: cannot use home directory {home}: it does not exist", result.stderr
    assert result.stderr.splitlines()[1].startswith("hint: ")
    assert not (tmp_path / "nonexistent").exists()


def test_lab_plan_on_a_missing_home_names_the_file_first_and_creates_nothing(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    home = tmp_path / "nonexistent" / "x"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nvms:\n  a: {imagee: appliance}\n")
    result = nestor_inprocess(home, "lab", "plan", str(bad), check=False)
    assert result.returncode != 0
    assert result.stderr.splitlines() == ["error: vms.a: unknown key 'imagee'", "hint: did you mean 'image'?"]
    good = tmp_path / "good.yaml"
    good.write_text("name: x\n")
    result = nestor_inprocess(home, "lab", "plan", str(good), check=False)
    assert result.returncode != 0 and "it does not exist" in result.stderr
    assert not (tmp_path / "nonexistent").exists()
