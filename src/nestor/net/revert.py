"""The reverter pattern: register the undo of each host change; run them all if the use case fails.

    with Reverter() as revert:
        make_bridge()
        revert.add(lambda: delete_bridge())
        ...               # an exception here deletes the bridge again
        revert.success()  # keep everything
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())


class Reverter:
    def __init__(self) -> None:
        self._undo: list[Callable[[], object]] = []

    def add(self, undo: Callable[[], object]) -> None:
        self._undo.append(undo)

    def success(self) -> None:
        self._undo.clear()

    def __enter__(self) -> Reverter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except Exception:  # the original error matters more than an undo's
                log.debug("undo %r failed", undo, exc_info=True)
