"""policy/tpm.py: a VM's TPM is turned on or off only while the VM is off (not running, paused or
saved), only on disk-image VMs, and its state is deleted only with --off; each refusal is one line
with a hint."""

from __future__ import annotations

import pytest

from nestor.errors import InvalidInput, NestorError, PolicyError
from nestor.model import VMState
from nestor.policy.tpm import RULE, check_change, on_apply


@pytest.mark.parametrize("on", [True, False])
def test_off_vms_may_change(on: bool) -> None:
    check_change("win", VMState.OFF, on, disk_image=True, delete_state=False)


def test_turning_it_off_with_its_state_deleted() -> None:
    check_change("win", VMState.OFF, False, disk_image=True, delete_state=True)
    check_change("app", VMState.OFF, False, disk_image=False, delete_state=True)  # off on any VM: nothing to refuse


@pytest.mark.parametrize("state", [VMState.RUNNING, VMState.PAUSED, VMState.SAVED])
@pytest.mark.parametrize("on", [True, False])
def test_only_while_off(state: VMState, on: bool) -> None:
    with pytest.raises(PolicyError) as info:
        check_change("win", state, on, disk_image=True, delete_state=False)
    err = info.value
    assert err.rule == RULE
    assert f"vm 'win' is {state.value}" in err.message and "only" in err.message and "off" in err.message
    assert "\n" not in err.message and err.hint and "nestor vm" in err.hint
    if state is VMState.SAVED:
        assert "--turn-off" in err.hint  # discarding the saved state is the way to a plain off VM
    else:
        assert err.hint == "nestor vm stop win"


def test_only_disk_image_vms_get_one() -> None:
    with pytest.raises(InvalidInput) as info:
        check_change("app", VMState.OFF, True, disk_image=False, delete_state=False)
    assert "disk-image" in info.value.message and "--tpm" in (info.value.hint or "")


def test_delete_state_goes_with_off() -> None:
    with pytest.raises(InvalidInput) as info:
        check_change("win", VMState.OFF, True, disk_image=True, delete_state=True)
    assert "--delete-state" in info.value.message and "--off --delete-state" in (info.value.hint or "")


def test_bad_input_is_named_before_the_state() -> None:
    """--on --delete-state is wrong whatever the VM does: that error first."""
    with pytest.raises(NestorError) as info:
        check_change("win", VMState.RUNNING, True, disk_image=True, delete_state=True)
    assert isinstance(info.value, InvalidInput)


@pytest.mark.parametrize("now", [True, False])
def test_applying_a_checkpoint_gives_back_its_tpm_setting(now: bool) -> None:
    """Hyper-V restores a checkpoint's security settings: the TPM setting it was taken with."""
    assert on_apply(not now, now) is (not now)
    assert on_apply(now, now) is None  # the same: nothing to change
    assert on_apply(None, now) is None  # a checkpoint from before nestor recorded it: as the VM is now
