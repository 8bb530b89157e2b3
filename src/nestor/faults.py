"""Test-only fault injection: nestor kills itself (SIGKILL) at a named point.

`NESTOR_TEST_KILL_AT=vm-new:after-insert nestor vm new web` dies right there, as a `kill -9` or a
power cut would hit it, so tests can check that the next command reconciles. Unset (always, in
production) every point is a no-op. Names are `COMMAND:STEP`; they are listed in POINTS so a
test can go through all of them.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable

ENV = "NESTOR_TEST_KILL_AT"
PAUSE_ENV = "NESTOR_TEST_PAUSE_AT"  # a point where the process waits instead (pause below)
PAUSE_MAX = 60.0

POINTS = (
    "vm-new:after-insert",  # the row exists (uncommitted), no directory yet
    "vm-new:after-mkdir",  # the directory exists, no files yet
    "vm-new:before-commit",  # files and adapters made, the row not yet committed
    "vm-start:after-attach",  # taps made, QEMU not spawned
    "vm-start:after-spawn",  # QEMU runs, nestor has not finished (balloon, restore)
    "vm-stop:after-exit",  # QEMU is gone, its runtime files and taps not cleaned
    "vm-save:after-migrate",  # the state is in saved.state.part, QEMU paused and alive
    "vm-save:after-exit",  # QEMU has exited, saved.state.part not yet renamed
    "vm-restore:before-cont",  # the state is loaded into QEMU, the guest not yet resumed
    "vm-remove:after-forget",  # adapters forgotten, the row and directory still there
    "vm-remove:after-row",  # the row is gone, the directory still there
    "lab-up:after-claim",  # an object recorded as the lab's, not yet made
    "lab-up:after-network",  # L0's switches and NATs made, no VM yet
    "image-publish:before-rename",  # the new image complete in its staging directory, not yet in place
    "image-publish:after-exchange",  # the new image in place, the old one in the staging directory
)


def point(name: str) -> None:
    """Die here if the test asked for it."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def pause(name: str, until: Callable[[], bool]) -> None:
    """Wait here (PAUSE_MAX s at most, or until `until()`) if the test asked for it, saying so on
    stderr first: a test sends its signal into a window it could otherwise only hit by luck.
    The points: `serve:start` (the daemon's first line), `serve:channel` (an L1's channel answers,
    the main thread has not gone on)."""
    if os.environ.get(PAUSE_ENV) != name:
        return
    print(f"nestor: paused at {name} (test hook {PAUSE_ENV})", file=sys.stderr, flush=True)
    deadline = time.monotonic() + PAUSE_MAX
    while time.monotonic() < deadline and not until():
        time.sleep(0.05)
