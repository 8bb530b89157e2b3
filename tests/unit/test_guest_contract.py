"""The host <-> guest contract (images/contract.py) as the guests' shell sees it: the rendered
contract.sh and the shared lib.sh, run by busybox sh (the shell of both inits)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from nestor import paths
from nestor.engine import argv
from nestor.images import contract, initramfs, rootfs

needs_busybox = pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox not installed")


def _sh(tmp_path: Path, script: str) -> str:
    (tmp_path / "contract.sh").write_text(contract.shell_fragment())
    (tmp_path / "lib.sh").write_text(initramfs.guest_lib())
    full = f". {tmp_path}/contract.sh\nLOG_TAG=t\n. {tmp_path}/lib.sh\n{script}"
    return subprocess.run(["busybox", "sh", "-c", full], capture_output=True, text=True, timeout=30, check=True).stdout


@needs_busybox
def test_contract_sh_carries_the_python_values(tmp_path: Path) -> None:
    out = _sh(tmp_path, 'echo "$APPLIANCE_BOOT_LINE|$NESTED_HOST_BOOT_LINE|$API_PORT_NAME|$AGENT_PORT_NAME|'
                        '$PAYLOAD_DIR|$NESTOR_HOME|$RUN_SCRIPT|$GUEST_LIB|$CONTRACT_PARAMS"')
    assert out.strip().split("|") == [
        contract.APPLIANCE_BOOT_LINE, contract.NESTED_HOST_BOOT_LINE, contract.API_PORT, contract.AGENT_PORT,
        contract.GUEST_PAYLOAD, contract.GUEST_HOME, contract.GUEST_RUN_SCRIPT, contract.GUEST_LIB,
        " ".join(contract.PARAMS)]


@needs_busybox
def test_read_cmdline_parses_what_the_host_writes(tmp_path: Path) -> None:
    params = contract.cmdline_params(hostname="l1", ip="10.0.0.2/24", gw="10.0.0.1", dns="10.0.0.1", root="/dev/vda")
    line = " ".join(["console=ttyS0", "quiet", *params, contract.param("payload", "/dev/vdb"),
                     "nestor.unknown=x", "nestor.level=1"])
    (tmp_path / "cmdline").write_text(line + "\n")
    out = _sh(tmp_path, f'read_cmdline {tmp_path}/cmdline\n'
                        'echo "$CMDLINE_hostname|$CMDLINE_ip|$CMDLINE_gw|$CMDLINE_dns|$CMDLINE_root|'
                        '$CMDLINE_payload|$CMDLINE_dhcp|${CMDLINE_unknown-unset}"')
    assert out.strip().split("|") == ["l1", "10.0.0.2/24", "10.0.0.1", "10.0.0.1", "/dev/vda", "/dev/vdb", "", "unset"]


def test_every_side_takes_the_names_from_the_contract() -> None:
    assert paths.API_PORT == contract.API_PORT
    assert initramfs.BOOT_LINE == contract.APPLIANCE_BOOT_LINE and rootfs.BOOT_LINE == contract.NESTED_HOST_BOOT_LINE
    assert rootfs.GUEST_INIT == contract.GUEST_INIT
    assert "name={contract.AGENT_PORT}" in Path(argv.__file__).read_text()  # the agent port QEMU gets
    for init in (initramfs.init_script(), rootfs.init_script()):
        assert ". /etc/nestor/contract.sh" in init and '. "$GUEST_LIB"' in init
        for shared in ("read_cmdline() {", "setup_net() {", "wait_for() {", "is_mounted() {"):
            assert shared not in init  # shared through lib.sh, not copied
    files = initramfs.guest_files()
    assert set(files) == {contract.GUEST_CONTRACT, contract.GUEST_LIB}
    assert initramfs.appliance_recipe() and "guest_files" in rootfs.rootfs_inputs("6.1.0-1-cloud-amd64")


def test_param_refuses_what_the_guests_do_not_read() -> None:
    with pytest.raises(ValueError):
        contract.param("bogus", "1")
