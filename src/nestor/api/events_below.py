"""Events of the levels below, as this level's: what one read of a guest's ring gives (pure).

A nested-host guest's daemon keeps its recent events in a ring (api/runtime.py); this level's
follower (api/events_follow.py) reads it in short requests, `GET /v1/events/recent?after=SEQ`,
and publishes what it took on its own bus. A guest is not trusted (its owner runs what they
like in it), so what it answers is checked here, event by event:
- at most MAX_TAKEN events a round, each at most MAX_EVENT_BYTES of JSON, of the known types,
  with short lower-case keys and bounded values (strings cleaned of control characters);
- its VM path is rebased under the guest (`vm` l2 in l1 is `path` l1/l2, `at` l1): a guest can
  only report paths under itself, its `path` must be its `at` and its `vm`, every segment a VM
  name, no deeper than MAX_DEPTH levels;
- numbers only go forward within one epoch (the guest daemon's run); a new epoch starts at 0.
Anything else is dropped (counted), and an answer that is malformed as a whole is a ValueError:
the follower marks that level unreachable and the stream goes on for the others.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import NestorError

KINDS = frozenset({"vm", "operation", "balancer", "level"})
MAX_TAKEN = 100  # events taken from one guest in one round (the rest: the next round)
MAX_EVENT_BYTES = 4096  # one event's JSON
MAX_KEYS = 24
MAX_STRING = 1000
MAX_ITEMS = 24  # of a nested object or list (an operation's error and its resource)
MAX_DEPTH = 8  # levels below this one that an event may come from (as guests.MAX_DEPTH)
STAMPED = ("id", "type", "time")  # this level's own, never the guest's
KEY = re.compile(r"[a-z][a-z_]{0,31}")
EPOCH = re.compile(r"[0-9a-zA-Z_-]{1,64}")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# The bytes of an honest answer of MAX_TAKEN events, and its objects and arrays (untrusted.loads).
MAX_ANSWER_BYTES = 2 * MAX_TAKEN * MAX_EVENT_BYTES + 4096
MAX_CONTAINERS = MAX_TAKEN * 8 + 16


@dataclass
class Cursor:
    """Where this level stands in one guest's ring: its epoch and the last number taken."""

    epoch: str | None = None  # None: no contact yet (the first read asks where the ring stands)
    after: int = 0


@dataclass
class Taken:
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (type, data) to publish
    cursor: Cursor = field(default_factory=Cursor)
    dropped: int = 0  # malformed events left out
    lost: int = 0  # events that left the guest's ring before this level read them
    restarted: bool = False  # a new epoch: the guest's daemon started again
    more: bool = False  # the guest has more after these: read again soon


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 62 else None


def take(answer: Any, guest: str, cursor: Cursor) -> Taken:
    """The events of one answer of guest VM `guest` (its name here) to `after=cursor.after`,
    rebased to this level, and the cursor for the next read. ValueError: a malformed answer."""
    if not isinstance(answer, dict):
        raise ValueError("its events answer is not an object")
    epoch, last, first, events = answer.get("epoch"), _int(answer.get("last")), answer.get("first"), answer.get("events")
    if not isinstance(epoch, str) or not EPOCH.fullmatch(epoch):
        raise ValueError("its events answer has no valid epoch")
    if last is None or not isinstance(events, list):
        raise ValueError("its events answer has no valid last number or event list")
    first = _int(first)
    taken = Taken(cursor=Cursor(epoch, cursor.after))
    if cursor.epoch is None:  # first contact: from now on
        taken.cursor.after = last
        return taken
    if cursor.epoch != epoch:  # its daemon started again: all of its new ring is new
        taken.restarted = True
        taken.cursor.after = after = 0
    else:
        after = cursor.after
        if last < after:  # numbers went back within one run: not an honest ring; start from where it says
            taken.cursor.after = last
            return taken
    if first is not None and first > after + 1:
        taken.lost = first - after - 1
    for raw in events[:MAX_TAKEN]:
        seq = _int(raw.get("id")) if isinstance(raw, dict) else None
        if seq is None or seq <= taken.cursor.after or seq > last:
            taken.dropped += 1  # out of order, or not numbered: it cannot move the cursor
            continue
        taken.cursor.after = seq
        event = rebase(raw, guest)
        if event is None:
            taken.dropped += 1
        else:
            taken.events.append(event)
    taken.dropped += max(0, len(events) - MAX_TAKEN)
    taken.more = taken.cursor.after < last
    return taken


def rebase(raw: dict[str, Any], guest: str) -> tuple[str, dict[str, Any]] | None:
    """One event of guest `guest`, as this level publishes it (without id and time, which this
    level stamps); None when it is malformed."""
    kind = raw.get("type")
    if kind not in KINDS or len(raw) > MAX_KEYS:
        return None
    try:
        if len(json.dumps(raw, allow_nan=False)) > MAX_EVENT_BYTES:
            return None
    except (TypeError, ValueError):
        return None
    data: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not KEY.fullmatch(key):
            return None
        if key in STAMPED:
            continue
        cleaned = _value(value, 0)
        if cleaned is _BAD:
            return None
        data[key] = cleaned
    at, vm, path = data.get("at"), data.get("vm"), data.get("path")
    levels = _levels(at) if at is not None else []
    if levels is None:
        return None
    if vm is not None:
        if not isinstance(vm, str) or _levels(vm) is None or "/" in vm:
            return None
        if path != "/".join([*levels, vm]):  # a VM's path is its level's and its name, nothing else
            return None
    elif path is not None:
        return None
    if len(levels) + 1 > MAX_DEPTH:
        return None
    data["at"] = "/".join([guest, *levels])
    if vm is not None:
        data["path"] = f"{data['at']}/{vm}"
    return str(kind), data


_BAD = object()


def _value(value: Any, depth: int) -> Any:
    """A JSON value as this level passes it on: bounded, strings without control characters."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(1 << 62) < value < 1 << 62 else _BAD
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        return CONTROL.sub("", value[:MAX_STRING])
    if depth >= 2:
        return _BAD
    if isinstance(value, list):
        if len(value) > MAX_ITEMS:
            return _BAD
        items = [_value(v, depth + 1) for v in value]
        return _BAD if any(v is _BAD for v in items) else items
    if isinstance(value, dict):
        if len(value) > MAX_ITEMS or not all(isinstance(k, str) and KEY.fullmatch(k) for k in value):
            return _BAD
        inner = {k: _value(v, depth + 1) for k, v in value.items()}
        return _BAD if any(v is _BAD for v in inner.values()) else inner
    return _BAD


def _levels(path: Any) -> list[str] | None:
    """A VM path's names, or None when it is not one ('' is no path here: a level's `at` is never empty)."""
    from ..hypervisor import split_levels

    if not isinstance(path, str) or not path or len(path) > MAX_STRING:
        return None
    try:
        levels = split_levels(path)
    except NestorError:
        return None
    return levels if len(levels) <= MAX_DEPTH else None
