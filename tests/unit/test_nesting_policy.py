"""The host's nesting policy: the pure rule (policy/nesting.py), and the service refusing under it."""

from __future__ import annotations

from pathlib import Path

import pytest

from nestor.errors import InvalidInput, PolicyError
from nestor.policy import nesting
from nestor.service import Service, VMSpec


@pytest.mark.parametrize("action", list(nesting.Action))
def test_allow_refuses_nothing(action: nesting.Action) -> None:
    nesting.check(nesting.Nesting.ALLOW, "web", action)


@pytest.mark.parametrize("action", list(nesting.Action))
def test_block_refuses_naming_the_policy(action: nesting.Action) -> None:
    with pytest.raises(PolicyError) as caught:
        nesting.check(nesting.Nesting.BLOCK, "web", action)
    err = caught.value
    assert err.kind == "policy" and err.rule == nesting.RULE == "nesting-block"
    assert "vm 'web'" in err.message and "policy blocks nesting" in err.message
    assert err.hint is not None and err.hint.startswith("nestor host set --nesting allow")
    if action is nesting.Action.START:
        assert "set-processor web --expose-virtualization-extensions off" in err.hint


def test_parse() -> None:
    assert nesting.parse("block") is nesting.Nesting.BLOCK and nesting.parse("allow") is nesting.Nesting.ALLOW
    with pytest.raises(InvalidInput):
        nesting.parse("maybe")


@pytest.fixture
def service(tmp_path: Path) -> Service:
    (tmp_path / "vmlinux").write_bytes(b"not really a kernel")
    return Service(tmp_path / "home")


def kernel_vm(tmp_path: Path, name: str, nested: bool) -> VMSpec:
    return VMSpec(name, memory=256 << 20, nested=nested, kernel=str(tmp_path / "vmlinux"))


def test_service_under_block(service: Service, tmp_path: Path) -> None:
    assert service.host_policy().nesting == "allow" and service.host_policy().changed is None
    service.vm_new(kernel_vm(tmp_path, "plain", nested=False))
    service.vm_new(kernel_vm(tmp_path, "l1", nested=True))
    policy = service.host_set_policy("block")
    assert policy.nesting == "block" and policy.changed is not None and policy.nested_vms == ["l1"]
    assert policy.running_nested == []

    with pytest.raises(PolicyError) as new:
        service.vm_new(kernel_vm(tmp_path, "l1b", nested=True))
    assert new.value.rule == "nesting-block"
    assert [v.name for v in service.vm_list()] == ["l1", "plain"]  # nothing made
    with pytest.raises(PolicyError):
        service.vm_set_processor("plain", nested=True)
    assert not service.vm_show("plain").nested  # nothing changed
    with pytest.raises(PolicyError) as start:
        service.vm_start("l1")
    assert "cannot start" in start.value.message
    # What the block leaves alone: other settings, turning nesting off, VMs without nesting
    service.vm_set_processor("l1", count=2)
    service.vm_set_processor("l1", nested=False)
    assert service.host_policy().nested_vms == []

    assert service.host_set_policy("allow").nesting == "allow"
    service.vm_set_processor("plain", nested=True)
    assert service.vm_show("plain").nested


def test_set_policy_refuses_bad_input(service: Service) -> None:
    with pytest.raises(InvalidInput):
        service.host_set_policy("sometimes")
    with pytest.raises(InvalidInput):
        service.host_set_policy(None)
    assert service.host_policy().nesting == "allow"
