"""The daemon's follower of the levels below: their events on this level's bus, with their paths.

While anyone listens to this level's events (a subscriber of /v1/events, or the level above
reading this level's ring: EventBus.listened), it reads, every INTERVAL seconds, the ring of
each running nested-host guest through that guest's API channel: one short request
(`GET /v1/events/recent?after=SEQ&limit=N`) under one deadline (ROUND_TIMEOUT); a guest with
nothing new is asked less often (up to every QUIET_MAX seconds), one with more at once. The channel
carries one command at a time: when another command holds it, that guest's round is skipped
(its events wait in its ring, numbered, and come in a later round). What a guest answers is
checked (api/events_below.py); a guest that fails or answers nonsense is marked with a `level`
event (state unreachable, with why) and asked again only after BACKOFF seconds, so one bad
guest costs the others at most one short round now and then. The same follower runs in every
level's daemon, so a guest's ring holds its own guests' events too: any depth reaches L0.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import untrusted
from ..errors import NestorError
from . import events_below
from .events_below import Cursor

if TYPE_CHECKING:
    from ..service.core import Core
    from .runtime import EventBus

INTERVAL = 1.0  # seconds between rounds while anyone listens
QUIET_MAX = 4.0  # a guest with nothing new is asked less often: twice the wait each time, up to this
ROUND_TIMEOUT = 4.0  # one guest's round: connect, sync, the request and its whole answer
SYNC_TIMEOUT = 2.0
BACKOFF = 15.0  # seconds before a guest that failed is asked again

log = logging.getLogger("nestor.events")
log.addHandler(logging.NullHandler())


class Follower:
    """The rounds over this level's guests (one thread: `run`)."""

    def __init__(self, bus: EventBus, core: Callable[[], Core]) -> None:
        self.bus = bus
        self._core_factory = core
        self._core: Core | None = None
        self.cursors: dict[str, Cursor] = {}
        self.due: dict[str, float] = {}  # guest -> time.monotonic() when it is asked next
        self.quiet: dict[str, float] = {}  # guest -> its wait while nothing comes
        self.unreachable: set[str] = set()

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(INTERVAL):
            if not self.bus.listened():
                self.forget()  # what happened meanwhile reached no one: start from now when anyone listens again
                continue
            try:
                self.round()
            except Exception:  # a bug: logged, the daemon and the stream live on
                log.exception("events of the levels below: round failed")

    def forget(self) -> None:
        self.cursors.clear()
        self.due.clear()
        self.quiet.clear()
        self.unreachable.clear()

    def core(self) -> Core:
        if self._core is None:
            self._core = self._core_factory()  # in the follower's thread: sqlite stays in its thread
        return self._core

    def guests(self) -> list[str]:
        """Running VMs of this level with a nestor API channel (nested-host guests)."""
        from ..engine import process

        core = self.core()
        names = []
        for config in core.vms.all():
            files = core.files(config)
            if config.nested and files.api_sock.exists() and process.live_pid(files.dir) is not None:
                names.append(config.name)
        return names

    def round(self) -> None:
        guests = self.guests()
        for gone in set(self.cursors) - set(guests):
            del self.cursors[gone]  # stopped: its daemon's next run is a new epoch anyway
            self.due.pop(gone, None)
            self.quiet.pop(gone, None)
            self.unreachable.discard(gone)
        now = time.monotonic()
        for name in guests:
            if self.due.get(name, 0.0) > now:
                continue
            self.follow(name)

    def follow(self, name: str) -> None:
        """One round for guest `name`: read its ring once (more rounds at once while it has more)."""
        from ..errors import Conflict

        cursor = self.cursors.get(name, Cursor())
        try:
            answer = self.read(name, cursor)
            taken = events_below.take(answer, name, cursor)
        except Conflict:
            return  # another command holds the channel
        except (NestorError, ValueError, OSError) as exc:
            self.fail(name, str(getattr(exc, "message", exc)))
            return
        if taken.events or taken.more or cursor.epoch is None:  # after first contact: read at once
            self.quiet.pop(name, None)
            self.due.pop(name, None)
        else:
            wait = min(QUIET_MAX, 2 * self.quiet.get(name, INTERVAL / 2))
            self.quiet[name] = wait
            self.due[name] = time.monotonic() + wait - INTERVAL / 2
        first = cursor.epoch is None
        self.cursors[name] = taken.cursor
        if first or name in self.unreachable or taken.restarted:
            self.unreachable.discard(name)
            self.bus.publish("level", {"at": name, "state": "following"})
        if taken.lost:
            self.bus.publish("level", {"at": name, "state": "lost", "lost": taken.lost})
        if taken.dropped:
            log.warning("events of vm '%s': dropped %d malformed", name, taken.dropped)
        for kind, data in taken.events:
            self.bus.publish(kind, data)

    def read(self, name: str, cursor: Cursor) -> Any:
        """The guest's answer (decoded JSON, bounded); Conflict when another command holds its channel."""
        from ..service import channel

        limit = 0 if cursor.epoch is None else events_below.MAX_TAKEN
        deadline = time.monotonic() + ROUND_TIMEOUT
        with channel.client(self.core(), name, ROUND_TIMEOUT, SYNC_TIMEOUT, deadline=deadline, lock_wait=0.0) as api:
            content = api.events_recent(cursor.after, limit)
        if len(content) > events_below.MAX_ANSWER_BYTES:
            raise ValueError(f"its events answer is larger than {events_below.MAX_ANSWER_BYTES >> 10} KiB")
        return untrusted.loads(content, events_below.MAX_CONTAINERS)

    def fail(self, name: str, why: str) -> None:
        self.due[name] = time.monotonic() + BACKOFF
        self.quiet.pop(name, None)
        if name not in self.unreachable:
            self.unreachable.add(name)
            self.bus.publish("level", {"at": name, "state": "unreachable", "error": why[:300]})


def start(bus: EventBus, home: Path, netns: str | None, stop: threading.Event) -> threading.Thread:
    """The follower's thread for the daemon of `home`."""
    from ..service.core import Core

    follower = Follower(bus, lambda: Core(home, netns))
    thread = threading.Thread(target=follower.run, args=(stop,), name="events-below", daemon=True)
    thread.start()
    return thread
