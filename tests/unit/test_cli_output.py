"""Terminal escapes from guests never reach L0's terminal; pipes still get a guest's exact bytes."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest

from nestor.cli.main import main
from nestor.cli.output import GuestOutput, escape_controls

HOSTILE = b"title\x1b]0;pwned\x07 clear\x1b[2J csi\xc2\x9b31m bidi\xe2\x80\xae lone\rover\r\nnext\tcol\n\xff!"


class FakeStream:
    """sys.stdout or sys.stderr as the CLI sees it: a terminal or a pipe."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.buffer = io.BytesIO()
        self.encoding = "utf-8"

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        self.buffer.write(text.encode())
        return len(text)

    def flush(self) -> None:
        pass

    @property
    def text(self) -> str:
        return self.buffer.getvalue().decode()


def assert_safe(text: str) -> None:
    assert not any(not ch.isprintable() and ch not in "\n\t" for ch in text), repr(text)


def test_escape_controls() -> None:
    text = HOSTILE.decode(errors="backslashreplace")
    safe = escape_controls(text)
    assert_safe(safe)
    assert "\\x1b]0;pwned\\x07" in safe and "\\x9b31m" in safe and "\\u202e" in safe and "lone\\rover\nnext\tcol\n" in safe
    assert escape_controls("a\nb\tc", keep="") == "a\\nb\\tc"
    assert escape_controls("plain ünïcode") == "plain ünïcode"


def test_guest_output_is_exact_in_a_pipe() -> None:
    stream: Any = FakeStream(tty=False)
    out = GuestOutput(stream)
    out.write(HOSTILE)
    out.close()
    assert stream.buffer.getvalue() == HOSTILE


def test_guest_output_on_a_terminal_is_escaped_across_chunks() -> None:
    stream: Any = FakeStream(tty=True)
    out = GuestOutput(stream)
    for index in range(len(HOSTILE)):  # one byte at a time: split UTF-8 characters and CR LF
        out.write(HOSTILE[index:index + 1])
    out.close()
    assert_safe(stream.text)
    assert stream.text == escape_controls(HOSTILE.decode(errors="backslashreplace"))


@pytest.fixture
def log_home(tmp_path: Path) -> Path:
    from nestor.service import Service, VMSpec

    service = Service(tmp_path / "home")
    service.vm_new(VMSpec("f", kernel="/bin/true", memory=128 << 20))
    service.core.files(service.core.vms.get("f")).serial_log.write_bytes(HOSTILE)
    return tmp_path / "home"


@pytest.mark.parametrize("tty", [True, False])
def test_vm_log(log_home: Path, monkeypatch: pytest.MonkeyPatch, tty: bool) -> None:
    stream = FakeStream(tty)
    monkeypatch.setattr(sys, "stdout", stream)
    main(["--home", str(log_home), "vm", "log", "f"])
    if tty:
        assert_safe(stream.text)
        assert "\\x1b[2J" in stream.text
    else:
        assert stream.buffer.getvalue() == HOSTILE


def test_vm_exec_to_a_terminal(log_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nestor.service import Service
    from nestor.service.types import ExecResult

    out, err = FakeStream(tty=True), FakeStream(tty=False)
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(Service, "vm_exec", lambda self, target, argv, timeout: ExecResult(0, HOSTILE, HOSTILE))
    with pytest.raises(SystemExit) as exit_info:
        main(["--home", str(log_home), "vm", "exec", "f", "--", "cat"])
    assert exit_info.value.code == 0
    assert_safe(out.text) and err.buffer.getvalue() == HOSTILE  # stderr is a pipe here: exact


def test_tree_errors_and_names_are_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    from nestor.cli.tree import print_tree

    print_tree({"host": "l0\x1b[31m", "level": 0, "vms": [
        {"name": "l1", "level": 1, "state": "running", "vcpus": 1, "memory": "1 GiB", "nested": True,
         "reachable": False, "error": "vm 'l1': \x1b]0;pwned\x07\nfake line"}]})
    text = capsys.readouterr().out
    assert_safe(text)
    assert len(text.splitlines()) == 2 and "\\x1b]0;pwned\\x07\\nfake line" in text


def test_ps_cells_and_notes_are_escaped(log_home: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    import nestor.ps
    from nestor.ps.objects import PSObject

    def execute(local: Any, script: str, note: Any) -> Any:
        note("lease for \x1b[2Jwpad")
        yield script, [PSObject("vm", "VirtualMachine", {"Name": "f\x1b]0;x\x07", "State": "Running"}, "list")]

    monkeypatch.setattr(nestor.ps, "execute", execute)
    main(["--home", str(log_home), "ps", "-c", "Get-VM"])
    captured = capsys.readouterr()
    assert_safe(captured.out) and assert_safe(captured.err)
    assert "\\x1b]0;x\\x07" in captured.out and "\\x1b[2Jwpad" in captured.err
