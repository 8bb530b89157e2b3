"""Shared fixtures: a cached image store, nestor homes whose QEMUs are always reaped."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import CACHE, leftover_processes, reap_home

REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()

# Network safety: no test makes the default switch (a bridge, a NAT, a dnsmasq) by accident, least
# of all in the root network namespace. Every nestor of the run (in process, subprocesses, daemons)
# inherits this; a test that wants the default switch drops it for commands given --netns
# (tests/helpers.nestor(..., default_switch=True)). docs/decisions.md, "the default switch".
os.environ["NESTOR_DEFAULT_SWITCH"] = "none"


@pytest.fixture(scope="session", autouse=True)
def no_leftover_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Last to end: a QEMU, swtpm, dnsmasq or daemon of this run still alive after every fixture
    has torn down is a leak (a bug): it is ended (by PID: it names this run's temporary directory
    or works in it) and the run fails."""
    base = str(tmp_path_factory.getbasetemp())
    yield
    import signal
    import time

    left = leftover_processes(base + "/")
    deadline = time.monotonic() + 5
    while left and time.monotonic() < deadline:  # a process in the middle of its exit
        time.sleep(0.2)
        left = leftover_processes(base + "/")
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, "processes left by the tests: " + "; ".join(f"{pid}: {cmd[:160]}" for pid, cmd in left.items())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`cluster` tests (two L1s, many minutes under TCG) and `ondemand` ones run only when `-m` names them."""
    asked = config.getoption("-m") or ""
    for marker in ("cluster", "ondemand"):
        if marker in asked:
            continue
        skip = pytest.mark.skip(reason=f"runs on demand: pytest -m {marker}")
        for item in items:
            if item.get_closest_marker(marker):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def image_store() -> Path:
    """The cached images directory, with the appliance built (once per machine)."""
    if os.geteuid() != 0 or shutil.which("qemu-system-x86_64") is None:
        pytest.skip("VM tests need root and qemu-system-x86 (scripts/setup installs it)")
    from nestor.images import appliance

    images = CACHE / "images"
    images.mkdir(parents=True, exist_ok=True)
    appliance.build_appliance(images, lambda line: print(f"[image] {line}", file=sys.stderr))
    return images


@pytest.fixture
def home(tmp_path: Path, image_store: Path) -> Iterator[Path]:
    """A fresh nestor home sharing the cached images; every QEMU it started is reaped."""
    root = _home_with(image_store, tmp_path / "home")
    try:
        yield root
    finally:
        reap_home(root)




@pytest.fixture(scope="session")
def debian_store() -> Path:
    """The cached images directory with the Debian disk image (cold: minutes of mmdebstrap and GRUB)."""
    from nestor.images import debian

    if os.geteuid() != 0 or shutil.which("qemu-system-x86_64") is None:
        pytest.skip("VM tests need root and qemu-system-x86 (scripts/setup installs it)")
    images = CACHE / "images"
    images.mkdir(parents=True, exist_ok=True)
    debian.build_debian(images, debian.DebianRequest(), lambda line: print(f"[image] {line}", file=sys.stderr))
    return images


@pytest.fixture(scope="session")
def nested_store(image_store: Path) -> Path:
    """The cached images directory with the nested-host image (mmdebstrap, ~1 min cold) and payload."""
    from nestor.images import nested_host

    nested_host.build_nested_host(image_store, lambda line: print(f"[image] {line}", file=sys.stderr))
    nested_host.build_payload(image_store, lambda line: print(f"[image] {line}", file=sys.stderr))
    return image_store


def _home_with(images: Path, root: Path) -> Path:
    """A nestor home (its database made) with the cached images linked in: tests may then put their
    own files into it (nestor takes over only a new, empty or nestor directory)."""
    from nestor.service import Service

    root.mkdir(parents=True, exist_ok=True)
    (root / "images").symlink_to(images)
    Service(root).close()
    return root


@pytest.fixture(scope="module")
def l1_home(tmp_path_factory: pytest.TempPathFactory, nested_store: Path) -> Iterator[Path]:
    """A home with one booted nested-enabled L1 ('l1'), shared by a module's tests."""
    from nestor.images.nested_host import BOOT_LINE
    from tests.helpers import nestor, vm_dir, wait_for_text

    home = _home_with(nested_store, tmp_path_factory.mktemp("l1") / "home")
    try:
        nestor(home, "vm", "new", "l1", "--image", "nested-host", "--nested", "--memory", "1G", "--vcpus", "2")
        nestor(home, "vm", "start", "l1")
        wait_for_text(vm_dir(home, "l1") / "serial.log", BOOT_LINE, timeout=180)
        from nestor.service import channel
        from nestor.service.core import Core

        channel.wait_ready(Core(home), "l1", timeout=180)  # l1's nestor serve answers
        yield home
    finally:
        reap_home(home)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Each phase's report on the test (item.stash[REPORTS]): a fixture's teardown can tell a failed test."""
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


@pytest.fixture
def l1_state_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """On a failed test that uses the shared l1, what l1 was doing (tests/helpers.vm_state), in the
    test's report ("Captured stdout teardown")."""
    yield
    call = request.node.stash.get(REPORTS, {}).get("call")
    if call is not None and call.failed and "l1_home" in request.fixturenames:
        from tests.helpers import vm_state

        print(vm_state(request.getfixturevalue("l1_home"), "l1"))
