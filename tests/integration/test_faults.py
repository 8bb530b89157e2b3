"""Fault injection: nestor SIGKILLed at every named point of vm new/start/stop/save/restore/remove.

After each kill the next ordinary commands reconcile: no VM is half-made or lost, no QEMU and
no tap is left behind, a saved state is never restored once its guest may have run on.
The points are nestor.faults.POINTS (NESTOR_TEST_KILL_AT); every one of them is used here.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestor import faults, paths
from nestor.engine import process
from tests.helpers import nestor, qemus, reap_home

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]

SCRIPT = "#!/bin/sh\necho fault-test-up\n"


@pytest.fixture
def env(home: Path) -> Iterator[tuple[Path, str]]:
    ns = f"nt-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        nestor(home, "switch", "new", "sw", "--type", "internal", netns=ns)
        (home / "run.sh").write_text(SCRIPT)
        yield home, ns
    finally:
        reap_home(home)
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=30)


def killed_at(point: str, home: Path, ns: str, *args: str) -> None:
    assert point in faults.POINTS
    argv = [sys.executable, "-m", "nestor", "--home", str(home), "--netns", ns, *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                            env={**os.environ, faults.ENV: point})
    assert result.returncode == -signal.SIGKILL, f"{point}: not killed ({result.returncode}): {result.stderr}"


def n(home: Path, ns: str, *args: str) -> str:
    return nestor(home, *args, netns=ns).stdout


def vms(home: Path, ns: str) -> dict[str, dict[str, object]]:
    return {vm["name"]: vm for vm in json.loads(n(home, ns, "vm", "list", "-o", "json"))}


def taps(ns: str) -> list[str]:
    links = json.loads(subprocess.run(["ip", "-n", ns, "-d", "-j", "link", "show"], capture_output=True, text=True,
                                      check=True, timeout=30).stdout)
    return [link["ifname"] for link in links if link.get("linkinfo", {}).get("info_kind") == "tun"]


def vm_dirs(home: Path) -> list[str]:
    return sorted(d.name for d in (home / "vms").iterdir()) if (home / "vms").exists() else []


def dir_of(home: Path, name: str) -> Path:
    from nestor.state import db

    return home / "vms" / str(db.VMRepo(db.connect(home / paths.DB_NAME)).get(name).id)


def clean(home: Path, ns: str) -> None:
    """Nothing leaked: every listed VM is off, no QEMU of the home, no tap in the namespace."""
    assert all(vm["state"] in ("off", "saved") for vm in vms(home, ns).values()), vms(home, ns)
    assert qemus(home) == []
    assert taps(ns) == []


def new_vm(home: Path, ns: str, name: str) -> None:
    n(home, ns, "vm", "new", name, "--memory", "128M", "--switch", "sw", "--run", str(home / "run.sh"))


@pytest.mark.parametrize("point", [p for p in faults.POINTS if p.startswith("vm-new:")])
def test_vm_new_killed_leaves_no_half_made_vm(env: tuple[Path, str], point: str) -> None:
    home, ns = env
    killed_at(point, home, ns, "vm", "new", "a", "--memory", "128M", "--switch", "sw", "--run", str(home / "run.sh"))
    assert "a" not in vms(home, ns)
    assert json.loads(n(home, ns, "switch", "show", "sw", "-o", "json"))["adapters"] == []
    new_vm(home, ns, "a")  # the same name again: nothing in the way
    assert vm_dirs(home) == [dir_of(home, "a").name]  # an orphaned directory was cleared
    n(home, ns, "vm", "start", "a")
    assert len(taps(ns)) == 1 and len(qemus(home)) == 1
    n(home, ns, "vm", "stop", "a", "--turn-off")
    clean(home, ns)


def test_vm_start_killed(env: tuple[Path, str]) -> None:
    home, ns = env
    new_vm(home, ns, "a")
    killed_at("vm-start:after-attach", home, ns, "vm", "start", "a")  # taps made, no QEMU
    clean(home, ns)  # `vm list` (in clean) reconciled: the tap is gone
    killed_at("vm-start:after-spawn", home, ns, "vm", "start", "a")  # QEMU runs, nestor died
    assert vms(home, ns)["a"]["state"] == "running" and len(qemus(home)) == 1
    n(home, ns, "vm", "stop", "a", "--turn-off")
    clean(home, ns)
    n(home, ns, "vm", "start", "a")
    n(home, ns, "vm", "stop", "a", "--turn-off")
    clean(home, ns)


def quiet_daemon(home: Path) -> None:
    """`vm start` starts the home's daemon, whose state watcher reconciles a VM that went off on
    its own within a second: stopped here, so what is shown is that the next command reconciles."""
    from nestor.service import daemon

    daemon.stop(paths.Home(home), timeout=10)


def test_vm_stop_killed_after_exit_and_a_guest_that_powers_off(env: tuple[Path, str]) -> None:
    home, ns = env
    new_vm(home, ns, "a")
    n(home, ns, "vm", "start", "a")
    quiet_daemon(home)
    killed_at("vm-stop:after-exit", home, ns, "vm", "stop", "a", "--turn-off")
    assert taps(ns) != []  # QEMU is gone, its tap not yet
    clean(home, ns)  # reconciled by `vm list`
    # A guest that powers itself off: nestor is not there when QEMU exits.
    (home / "off.sh").write_text("#!/bin/sh\necho bye\npoweroff -f\n")
    n(home, ns, "vm", "new", "p", "--memory", "128M", "--switch", "sw", "--run", str(home / "off.sh"))
    n(home, ns, "vm", "start", "p")
    quiet_daemon(home)
    pid = process.live_pid(dir_of(home, "p"))
    assert pid is not None and process.wait_exit(pid, 120), "the guest did not power itself off"
    assert len(taps(ns)) == 1  # left behind by the guest's own poweroff
    n(home, ns, "vm", "show", "p")  # the next command on that VM reconciles
    assert taps(ns) == []
    clean(home, ns)


def test_vm_save_and_restore_killed(env: tuple[Path, str]) -> None:
    home, ns = env
    new_vm(home, ns, "a")
    directory = dir_of(home, "a")
    n(home, ns, "vm", "start", "a")
    # Killed after the migration, QEMU still alive: no saved state, the live guest is the truth.
    killed_at("vm-save:after-migrate", home, ns, "vm", "save", "a")
    assert not (directory / paths.SAVED_STATE).exists()
    assert vms(home, ns)["a"]["state"] == "running" and len(qemus(home)) == 1
    n(home, ns, "vm", "stop", "a", "--turn-off")
    clean(home, ns)
    # Killed after QEMU exited, before the rename: an unfinished save is never restored.
    n(home, ns, "vm", "start", "a")
    killed_at("vm-save:after-exit", home, ns, "vm", "save", "a")
    assert vms(home, ns)["a"]["state"] == "off"  # not "saved"
    clean(home, ns)
    n(home, ns, "vm", "start", "a")
    launch = json.loads((directory / paths.LAUNCH).read_text())
    assert "-incoming" not in launch["argv"] and not (directory / paths.SAVING).exists()
    # A real save, then a restore killed before `cont`: the state is not valid any more.
    n(home, ns, "vm", "save", "a")
    assert vms(home, ns)["a"]["state"] == "saved"
    killed_at("vm-restore:before-cont", home, ns, "vm", "start", "a")
    assert not (directory / paths.SAVED_STATE).exists()
    assert vms(home, ns)["a"]["state"] in ("running", "paused")
    n(home, ns, "vm", "stop", "a", "--turn-off")  # its state lived only in that QEMU: turned off, lost
    clean(home, ns)
    assert vms(home, ns)["a"]["state"] == "off"
    n(home, ns, "vm", "start", "a")
    assert "-incoming" not in json.loads((directory / paths.LAUNCH).read_text())["argv"]
    assert not (directory / paths.RESTORING).exists()
    n(home, ns, "vm", "stop", "a", "--turn-off")
    clean(home, ns)


def test_saved_state_is_pinned_to_its_qemu(env: tuple[Path, str]) -> None:
    home, ns = env
    new_vm(home, ns, "a")
    directory = dir_of(home, "a")
    n(home, ns, "vm", "start", "a")
    n(home, ns, "vm", "save", "a")
    meta = json.loads((directory / paths.SAVED_META).read_text())
    assert "qemu-system" in meta["pin"]["binary"] and any(m.startswith("-M microvm") for m in meta["pin"]["machine"])
    meta["pin"]["binary"] = "/usr/bin/qemu-system-x86_64 1 1"  # as if QEMU was upgraded since
    (directory / paths.SAVED_META).write_text(json.dumps(meta))
    result = nestor(home, "vm", "start", "a", netns=ns, check=False)
    assert result.returncode != 0 and "saved by another QEMU" in result.stderr and "--turn-off" in result.stderr
    clean(home, ns)
    assert vms(home, ns)["a"]["state"] == "saved"  # refused, not discarded
    n(home, ns, "vm", "stop", "a", "--turn-off")
    n(home, ns, "vm", "start", "a")
    n(home, ns, "vm", "stop", "a", "--turn-off")
    clean(home, ns)


def test_vm_remove_killed(env: tuple[Path, str]) -> None:
    home, ns = env
    new_vm(home, ns, "a")
    killed_at("vm-remove:after-forget", home, ns, "vm", "remove", "a")
    assert "a" in vms(home, ns)
    n(home, ns, "vm", "remove", "a")
    assert "a" not in vms(home, ns) and vm_dirs(home) == []
    new_vm(home, ns, "b")
    orphan = dir_of(home, "b").name
    killed_at("vm-remove:after-row", home, ns, "vm", "remove", "b")
    assert "b" not in vms(home, ns) and vm_dirs(home) == [orphan]
    new_vm(home, ns, "c")  # sweeps the orphaned directory
    assert vm_dirs(home) == [dir_of(home, "c").name]
    clean(home, ns)


def test_every_point_is_exercised() -> None:
    text = Path(__file__).read_text() + (Path(__file__).parent / "test_lab.py").read_text()  # lab-up: points
    assert all(f'"{point}"' in text or point.startswith("vm-new:") for point in faults.POINTS)


PUBLISH = """
import sys
from pathlib import Path
from nestor.images import publish
images, version = Path(sys.argv[1]), sys.argv[2]
with publish.Staging(images, "img") as stage:
    (stage / "data").write_text(version)
    publish.write_manifest(stage, {"version": version})
    publish.publish(stage, images / "img")
"""


def publish_image(images: Path, version: str, point: str | None = None) -> int:
    env = {**os.environ, faults.ENV: point} if point else dict(os.environ)
    return subprocess.run([sys.executable, "-c", PUBLISH, str(images), version], capture_output=True, timeout=60,
                          check=False, env=env).returncode


def debris(images: Path) -> list[str]:
    return sorted(entry.name for entry in images.iterdir() if entry.name.startswith("."))


@pytest.mark.parametrize("point", ["image-publish:before-rename", "image-publish:after-exchange"])
def test_image_publish_killed_leaves_a_whole_image_and_no_debris(tmp_path: Path, point: str) -> None:
    """Replacing an image, killed before or right after the swap: the image is always whole (old
    or new), and what the kill left is gone after the next `image list` and the next publish."""
    assert point in faults.POINTS
    home = tmp_path / "home"
    images = home / "images"
    assert publish_image(images, "v1") == 0
    assert publish_image(images, "v2", point) == -signal.SIGKILL
    expected = "v1" if point.endswith("before-rename") else "v2"
    assert (images / "img" / "data").read_text() == expected
    assert debris(images), "the kill left nothing to clean (the point was not reached)"
    nestor(home, "image", "list")
    assert debris(images) == []
    assert publish_image(images, "v2", point) == -signal.SIGKILL
    assert publish_image(images, "v3") == 0  # the next publish cleans too
    assert (images / "img" / "data").read_text() == "v3" and debris(images) == []
