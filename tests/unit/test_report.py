"""Reports across levels (service/report.py): what comes up from a level below is checked and redacted."""

from __future__ import annotations

import pytest

from nestor.errors import GuestError
from nestor.service import report

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxvbmdlbm91Z2hrZXltYXRlcmlhbA== user@box"


def test_redact_removes_keys_and_secret_values() -> None:
    text = f"boot\n{KEY}\nauthorized {PUB}\ntoken=abc123def password: hunter2 Authorization: Bearer xyz\nend"
    out = report.redact(text)
    for secret in ("b3BlbnNzaC1rZXktdjEAAAAA", "AAAAC3NzaC1lZDI1NTE5", "abc123def", "hunter2", "xyz"):
        assert secret not in out
    assert out.startswith("boot\n[private key removed]") and out.endswith("end")
    assert "ssh-ed25519 [key removed]" in out


def test_an_unterminated_private_key_is_removed_to_the_end() -> None:
    assert report.redact("a\n-----BEGIN RSA PRIVATE KEY-----\nMIIE") == "a\n[private key removed]"


def test_a_report_from_below_is_checked() -> None:
    hostile = {
        "host": "evil\x1b]0;pwned\x07",
        "files": {"versions.txt": "x" * (report.TAIL * 2), "../../etc/passwd": "root", "dmesg.txt": 7,
                  "qemu.log": f"{KEY}"},
        "vms": {"ok": {"argv.txt": "qemu"}, "../x": {"argv.txt": "no"}, "Bad Name": {}},
        "below": {"ok": {"error": "down\x1b[2J"}, "deep": "not a dict?"},
    }
    with pytest.raises(GuestError, match="malformed"):  # a level that is not a report
        report.bugreport_from_json(hostile)
    hostile["below"] = {"ok": {"error": "down\x1b[2J"}}
    data = report.bugreport_from_json(hostile)
    assert "\x1b" not in data["host"]
    assert set(data["files"]) == {"versions.txt", "qemu.log"}
    assert len(data["files"]["versions.txt"]) == report.TAIL
    assert "PRIVATE KEY-----" not in data["files"]["qemu.log"]
    assert set(data["vms"]) == {"ok"}
    assert data["below"] == {"ok": {"error": "down[2J"}}


def test_too_deep_a_report_is_refused() -> None:
    data: dict = {"host": "h", "files": {}, "vms": {}, "below": {}}
    for _ in range(report.MAX_DEPTH + 2):
        data = {"host": "h", "files": {}, "vms": {}, "below": {"v": data}}
    with pytest.raises(GuestError, match="deeper"):
        report.bugreport_from_json(data)


def test_archive_layout_and_levels() -> None:
    inside = {"host": "l1", "files": {"versions.txt": "v"}, "vms": {"l2": {"argv.txt": "q"}}, "below": {}}
    data = {"host": "l0", "files": {"versions.txt": "v0"}, "vms": {"l1": {"argv.txt": "q1"}},
            "below": {"l1": inside, "l3": {"error": "silent"}}}
    names = [name for name, _ in report.archive_members(data, "top/L0")]
    assert names == ["top/L0/host.txt", "top/L0/versions.txt", "top/L0/vms/l1/argv.txt",
                     "top/L0/vms/l1/inside/host.txt", "top/L0/vms/l1/inside/versions.txt",
                     "top/L0/vms/l1/inside/vms/l2/argv.txt", "top/L0/vms/l3/inside/unreachable.txt"]
    assert report.level_paths(data, "L0") == ["L0", "L0/l1", "L0/l3"]


def test_check_tree_from_below_is_checked() -> None:
    data = report.check_tree_from_json({
        "host": "l1", "ok": True, "facts": {"level": 1, "x\x1b": "y\x1b", "big": {"nested": "dict"}},
        "checks": [{"name": "accelerator", "ok": True, "detail": "kvm", "fix": None}, "junk"],
        "below": {"l2": {"error": "timeout"}, "../x": {}}})
    assert data["checks"] == [{"name": "accelerator", "ok": True, "detail": "kvm", "fix": None}]
    assert data["facts"] == {"level": 1, "x": "y", "big": ""}
    assert data["below"] == {"l2": {"error": "timeout"}}
