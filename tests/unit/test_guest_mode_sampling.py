"""registers_detector's reading of query-stats guest_mode for KVM domains: an instant, so sampled.

Only the sampling rule is tested here (the monitor's answers are given); the real reading through
libvirt is tests/integration/test_cluster.py (an L3 under an L2's KVM) and test_libvirt_qemu.py."""

from __future__ import annotations

import json
from typing import Any

import libvirt_qemu
import pytest

from nestor.remote import libvirt_engine


class Domain:
    def XMLDesc(self, _flags: int) -> str:
        return "<domain type='kvm'><name>x</name></domain>"


def answers(monkeypatch: pytest.MonkeyPatch, values: list[int]) -> list[int]:
    asked: list[int] = []

    def command(_dom: Any, _cmd: str, _flags: int) -> str:
        value = values[min(len(asked), len(values) - 1)]
        asked.append(value)
        return json.dumps({"return": [{"provider": "kvm", "qom-path": "/machine/unattached/device[0]",
                                       "stats": [{"name": "guest_mode", "value": value}]}]})

    monkeypatch.setattr(libvirt_qemu, "qemuMonitorCommand", command)
    monkeypatch.setattr(libvirt_engine, "GUEST_MODE_GAP", 0.0)
    return asked


def test_a_vcpu_seen_in_guest_mode_once_is_a_running_hypervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = answers(monkeypatch, [0, 0, 1])
    running, how = libvirt_engine.registers_detector(Domain())
    assert running is True and "guest_mode = 1" in how and asked == [0, 0, 1]


def test_no_hypervisor_only_after_every_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = answers(monkeypatch, [0])
    running, how = libvirt_engine.registers_detector(Domain())
    assert running is False and len(asked) == libvirt_engine.GUEST_MODE_SAMPLES
    assert f"{libvirt_engine.GUEST_MODE_SAMPLES} samples" in how
