"""The daemon's shared state: operations (long work) and the event stream.

An operation runs one use case in a worker thread with its own Service. It has an id, a status
(pending → running → success | failure | cancelled), progress lines, and its result or error;
ended operations are kept for OPERATION_TTL seconds (clients need the result). Cancel (DELETE)
sets a flag; work that reports progress stops at its next report (errors.Cancelled).

Events are published from any thread and fanned out to every subscriber's asyncio queue as
server-sent events; a subscriber that falls behind loses its oldest events, not the daemon's memory.
The bus also keeps a bounded ring of its recent events, numbered (`id`), which the level above
reads in short requests (`GET /v1/events/recent?after=SEQ`, api/events_below.py): so the events of
every level reach L0's stream, each with its VM path (`path`; `at` names the level it came from).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import Cancelled, NestorError, NotFound
from ..service.types import to_json
from .table import Answer, json_answer

if TYPE_CHECKING:
    import asyncio

    from ..service import Service
    from .table import Settings

OPERATION_TTL = 600.0
MAX_PROGRESS = 200  # lines kept per operation
QUEUE_SIZE = 1000  # events buffered per subscriber
RING_SIZE = 1000  # recent events kept for the level above (GET /v1/events/recent)
RING_PAGE = 200  # at most this many in one answer of /v1/events/recent
RING_INTEREST = 30.0  # seconds after the last read of the ring that the level above counts as listening


class EventBus:
    def __init__(self) -> None:
        # each subscriber's loop, queue, and the level below it follows (None: all of them, and this one)
        self._subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[str], str | None]] = set()
        self._lock = threading.Lock()
        self._last_id = 0
        self._ring: deque[dict[str, Any]] = deque(maxlen=RING_SIZE)
        self.epoch = uuid.uuid4().hex[:16]  # this bus's run: numbers start again when the daemon does
        self.last_read: float | None = None  # time.monotonic() of the last read of the ring
        self.on_read: Callable[[], None] | None = None  # called at every read of the ring (server.py)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """An event of this level; one naming a VM (`vm`) gets its `path` from here (its name)."""
        if isinstance(data.get("vm"), str) and "path" not in data:
            data = {**data, "path": data["vm"]}
        with self._lock:
            self._last_id += 1
            event = {"id": self._last_id, "type": kind, "time": time.time(), **data}
            self._ring.append(event)
            subscribers = list(self._subscribers)
        text = f"id: {event['id']}\nevent: {kind}\ndata: {json.dumps(event, default=str)}\n\n"
        value = event.get("at")
        at = value if isinstance(value, str) else ""
        for loop, queue, level in subscribers:
            if level is not None and not (at == level or at.startswith(level + "/")):
                continue
            with contextlib.suppress(RuntimeError):  # that subscriber's loop has closed
                loop.call_soon_threadsafe(_put, queue, text)

    async def subscribe(self, at: str | None = None) -> AsyncIterator[str]:
        """This level's events as server-sent events; with `at` (a VM path), only those of that
        level and the levels below it."""
        import asyncio  # only with a server running (an L1's channel path has none at first)

        queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
        entry = (asyncio.get_running_loop(), queue, at or None)
        with self._lock:
            self._subscribers.add(entry)
        try:
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), 15.0)
                except TimeoutError:
                    yield ": keep-alive\n\n"
        finally:
            with self._lock:
                self._subscribers.discard(entry)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def recent(self, after: int = 0, limit: int = RING_PAGE) -> dict[str, Any]:
        """The ring's events numbered above `after` (at most `limit`, oldest first), with the
        bus's epoch and its last number: `after` of the next read is the last id taken, or
        `last` at first contact (limit=0: only where the ring stands)."""
        self.last_read = time.monotonic()
        with self._lock:
            events = [e for e in self._ring if e["id"] > after][:max(0, min(limit, RING_PAGE))]
            first = self._ring[0]["id"] if self._ring else None
            last = self._last_id
        if self.on_read is not None:
            self.on_read()
        return {"epoch": self.epoch, "first": first, "last": last, "events": json.loads(json.dumps(events, default=str))}

    def listened(self) -> bool:
        """Does anyone want this level's events: a subscriber here, or the level above lately?"""
        return self.subscribers > 0 or (self.last_read is not None
                                        and time.monotonic() - self.last_read < RING_INTEREST)


def _put(queue: asyncio.Queue[str], text: str) -> None:
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(text)


# Buckets of the operations' duration histogram (seconds): starts under TCG take tens of seconds,
# image builds minutes.
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class OperationStats:
    """Counts and durations of ended operations per kind and status, for /metrics (api/metrics.py)
    without importing prometheus_client here (an L1's channel path imports this module)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, str], int] = {}
        self.buckets: dict[str, list[int]] = {}  # per kind: counts per bucket (cumulative at export)
        self.sums: dict[str, float] = {}
        self.totals: dict[str, int] = {}

    def observe(self, kind: str, status: str, seconds: float) -> None:
        with self._lock:
            self.counts[(kind, status)] = self.counts.get((kind, status), 0) + 1
            buckets = self.buckets.setdefault(kind, [0] * len(DURATION_BUCKETS))
            for i, bound in enumerate(DURATION_BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
                    break
            self.sums[kind] = self.sums.get(kind, 0.0) + seconds
            self.totals[kind] = self.totals.get(kind, 0) + 1

    def snapshot(self) -> tuple[dict[tuple[str, str], int], dict[str, tuple[list[int], float, int]]]:
        """(counts, per kind: (cumulative bucket counts, sum, count))."""
        with self._lock:
            hist = {}
            for kind, buckets in self.buckets.items():
                cumulative, total = [], 0
                for n in buckets:
                    total += n
                    cumulative.append(total)
                hist[kind] = (cumulative, self.sums[kind], self.totals[kind])
            return dict(self.counts), hist


@dataclass
class Operation:
    id: str
    description: str
    vm: str | None = None
    kind: str = "other"  # what kind of work: vm.start, image.build, ... (the metrics' label)
    status: str = "pending"
    created: float = field(default_factory=time.time)
    ended: float | None = None
    progress_lines: list[str] = field(default_factory=list)
    result: Any = None
    error: dict[str, Any] | None = None
    cancel_requested: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    on_progress: Callable[[Operation, str], None] | None = None

    def progress(self, line: str) -> None:
        if self.cancel_requested:
            raise Cancelled(f"operation {self.id} ({self.description}) was cancelled")
        self.progress_lines = [*self.progress_lines[-(MAX_PROGRESS - 1):], line]
        if self.on_progress:
            self.on_progress(self, line)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "url": f"/v1/operations/{self.id}", "description": self.description, "vm": self.vm,
                "status": self.status, "created": self.created, "ended": self.ended,
                "progress": self.progress_lines[-20:], "result": self.result, "error": self.error,
                "may_cancel": self.status in ("pending", "running")}


Work = Callable[["Service", Operation], Any]


class Operations:
    def __init__(self, settings: Settings, events: EventBus) -> None:
        self.settings = settings
        self.events = events
        self.stats = OperationStats()
        self._ops: dict[str, Operation] = {}
        self._lock = threading.Lock()

    def submit(self, description: str, work: Work, vm: str | None = None, kind: str = "other") -> Answer:
        """Run `work` in a thread, in the context of the caller (who asked: service/audit.py)."""
        op = Operation(str(uuid.uuid4()), description, vm, kind, on_progress=self._progressed)
        with self._lock:
            self._expire()
            self._ops[op.id] = op
        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(self._run, op, work), name=f"op-{op.id[:8]}", daemon=True).start()
        return json_answer(op.to_json(), 202, headers={"Location": f"/v1/operations/{op.id}"})

    def _progressed(self, op: Operation, line: str) -> None:
        self.events.publish("operation", {"operation": op.id, "status": op.status, "progress": line})

    def _run(self, op: Operation, work: Work) -> None:
        op.status = "running"
        self.events.publish("operation", {"operation": op.id, "status": "running", "description": op.description})
        try:
            with self.settings.service() as service:
                result = work(service, op)
            op.result = to_json(result)
            op.status = "success"
        except Cancelled as err:
            op.error = err.to_json()
            op.status = "cancelled"
        except NestorError as err:
            op.error = err.to_json()
            op.status = "failure"
        except Exception as exc:  # a bug: recorded, and the daemon lives on
            op.error = {"kind": "internal", "message": f"internal error: {type(exc).__name__}: {exc}",
                        "hint": "this is a bug: see the daemon's log", "rule": None, "resource": {}}
            op.status = "failure"
        op.ended = time.time()
        self.stats.observe(op.kind, op.status, op.ended - op.created)
        op.done.set()
        self.events.publish("operation", {"operation": op.id, "status": op.status, "vm": op.vm,
                                          "error": op.error})

    def _expire(self) -> None:
        now = time.time()
        for op_id in [k for k, op in self._ops.items() if op.ended and now - op.ended > OPERATION_TTL]:
            del self._ops[op_id]

    def _get(self, op_id: str) -> Operation:
        with self._lock:
            op = self._ops.get(op_id)
        if op is None:
            raise NotFound(f"operation '{op_id[:40]}' not found", hint="GET /v1/operations lists them")
        return op

    def get(self, op_id: str, wait: float = 0.0) -> dict[str, Any]:
        op = self._get(op_id)
        if wait:
            op.done.wait(wait)
        return op.to_json()

    def cancel(self, op_id: str) -> dict[str, Any]:
        op = self._get(op_id)
        if op.status in ("pending", "running"):
            op.cancel_requested = True
        return op.to_json()

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            self._expire()
            return [op.to_json() for op in self._ops.values()]


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.events = EventBus()
        self.operations = Operations(settings, self.events)
