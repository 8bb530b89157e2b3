"""Bad input: a one-line error (plus an optional hint), a non-zero exit, no traceback, nothing changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import nestor


def assert_refused(home: Path, *args: str) -> str:
    before = json.loads(nestor(home, "vm", "list", "-o", "json").stdout)
    result = nestor(home, *args, check=False)
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert lines and lines[0].startswith("error: "), result.stderr
    assert len(lines) <= 2 and all(line.startswith(("error: ", "hint: ")) for line in lines), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert json.loads(nestor(home, "vm", "list", "-o", "json").stdout) == before
    return lines[0]


@pytest.mark.parametrize("name", ["a/b", "..", "a b", "", "x" * 200, "../../etc"])
def test_bad_names(home: Path, name: str) -> None:
    assert "name" in assert_refused(home, "vm", "new", name)


@pytest.mark.parametrize("memory", ["abc", "0", "-1G", "100T"])
def test_bad_memory(home: Path, memory: str) -> None:
    assert "memory" in assert_refused(home, "vm", "new", "m", "--memory", memory)


@pytest.mark.parametrize("vcpus", ["0", "-1", "100000", "many"])
def test_bad_vcpus(home: Path, vcpus: str) -> None:
    assert_refused(home, "vm", "new", "v", "--vcpus", vcpus)


def test_unknown_things(home: Path, tmp_path: Path) -> None:
    assert "not found" in assert_refused(home, "vm", "show", "nope")
    assert "not found" in assert_refused(home, "vm", "start", "nope")
    assert "image 'windows' not found" in assert_refused(home, "vm", "new", "i", "--image", "windows")
    assert "not found" in assert_refused(home, "vm", "new", "k", "--kernel", str(tmp_path / "missing"))
    assert "not found" in assert_refused(home, "vm", "new", "s", "--run", str(tmp_path / "missing.sh"))
    assert "version" in assert_refused(home, "vm", "new", "o", "--config-version", "3.1")
    assert assert_refused(home, "vm", "frobnicate")


def test_old_config_version_cannot_enable_nesting_until_upgrade(home: Path) -> None:
    nestor(home, "vm", "new", "old", "--config-version", "9.0")
    line = assert_refused(home, "vm", "set-processor", "old", "--expose-virtualization-extensions", "on")
    assert "configuration version 9.0" in line
    assert "needs version 10.0" in assert_refused(home, "vm", "new", "old2", "--config-version", "9.0", "--nested")
    nestor(home, "vm", "upgrade", "old")
    nestor(home, "vm", "set-processor", "old", "--expose-virtualization-extensions", "on")
    shown = json.loads(nestor(home, "vm", "show", "old", "-o", "json").stdout)
    assert shown["nested"] is True and shown["config_version"] == "11.0"


def test_nested_vcpu_warning_names_the_rule(home: Path) -> None:
    result = nestor(home, "vm", "new", "big", "--vcpus", "226", "--nested")
    assert "225" in result.stderr and result.stderr.startswith("warning: ")


def test_duplicate_name(home: Path) -> None:
    nestor(home, "vm", "new", "dup")
    assert "already exists" in assert_refused(home, "vm", "new", "dup")


@pytest.mark.parametrize("bad_home", ["/proc/nestor-home", "/etc/hostname/nestor"])
def test_unwritable_home(bad_home: str) -> None:
    result = nestor(Path(bad_home), "vm", "list", check=False)
    assert result.returncode != 0
    assert result.stderr.startswith("error: cannot use home directory") and "Traceback" not in result.stderr
