"""The CLI at any level (cli/context.py: Ctx.vm, Ctx.level): a VM path or --at reaches the nestor
of that level (here the in-process tree of tests/unit/levels_fake.py), with the same output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nestor.cli.main import main
from nestor.service import Service
from tests.unit.levels_fake import tree as tree  # the fixture


def run(home: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(["--home", str(home), *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_vm_commands_take_a_path(tree: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    l0 = tree["l0"]
    code, out, _ = run(l0, capsys, "vm", "show", "l1/l2", "-o", "json")
    assert code == 0 and json.loads(out)["name"] == "l2"
    code, out, _ = run(l0, capsys, "vm", "show", "l1/l2/web", "-o", "json")
    assert code == 0 and json.loads(out)["name"] == "web"
    code, out, err = run(l0, capsys, "vm", "set-processor", "l1/l2", "--count", "2")
    assert code == 0, err
    assert "vm 'l1/l2' processor updated" in out
    with Service(tree["l1"]) as l1:
        assert l1.vm_show("l2").vcpus == 2
    code, out, err = run(l0, capsys, "vm", "set-memory", "l1/l2", "--startup", "320M")
    assert code == 0, err
    with Service(tree["l1"]) as l1:
        assert l1.vm_show("l2").memory == 320 << 20


def test_at_on_commands_without_a_vm(tree: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    l0 = tree["l0"]
    code, out, err = run(l0, capsys, "switch", "new", "lan", "--type", "private", "--at", "l1")
    assert code == 0, err
    code, out, _ = run(l0, capsys, "switch", "list", "--at", "l1", "-o", "json")
    assert code == 0 and [s["name"] for s in json.loads(out)] == ["lan"]
    code, out, _ = run(l0, capsys, "switch", "list", "-o", "json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = run(l0, capsys, "vm", "list", "--at", "l1/l2", "-o", "json")
    assert code == 0 and [v["name"] for v in json.loads(out)] == ["web"]
    kernel = l0.parent / "vmlinux"
    code, out, err = run(l0, capsys, "vm", "new", "db", "--at", "l1", "--memory", "256M", "--kernel", str(kernel))
    assert code == 0, err
    assert "vm 'l1/db' created" in out
    with Service(tree["l1"]) as l1:
        assert sorted(v.name for v in l1.vm_list()) == ["db", "l2"]
    code, out, err = run(l0, capsys, "adapter", "add", "l1/db", "--switch", "lan")
    assert code == 0, err
    code, out, _ = run(l0, capsys, "adapter", "list", "l1/db", "-o", "json")
    assert code == 0 and [a["switch"] for a in json.loads(out)] == ["lan"]


def test_errors_name_the_level(tree: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    l0 = tree["l0"]
    code, _, err = run(l0, capsys, "vm", "show", "l1/l9")
    assert code == 3 and err.splitlines()[0] == "error: vm 'l1/l9': no VM 'l9' in l1", err
    assert err.splitlines()[1].startswith("hint: ")
    code, _, err = run(l0, capsys, "vm", "stop", "l1/l9/web")
    assert code == 3 and err.splitlines()[0] == "error: vm 'l1/l9': no VM 'l9' in l1", err
    code, _, err = run(l0, capsys, "switch", "list", "--at", "l1//x")
    assert code == 2 and "not a VM path" in err
    code, _, err = run(l0, capsys, "vm", "console", "l1/l2")
    assert code == 2 and "this host's VMs only" in err
