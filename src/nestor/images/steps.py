"""Progress of image builds: lines prefixed with the time since the build started."""

from __future__ import annotations

import time
from collections.abc import Callable

Progress = Callable[[str], None]


class Steps:
    """Progress lines prefixed with the elapsed time since ``started``."""

    def __init__(self, progress: Progress, started: float) -> None:
        self._progress = progress
        self._started = started

    def __call__(self, message: str) -> None:
        self._progress(f"[{time.monotonic() - self._started:6.1f} s] {message}")

    def sub(self, message: str) -> None:
        self(f"  {message}")
