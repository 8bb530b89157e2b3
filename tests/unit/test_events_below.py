"""Events of the levels below (issue 16): the ring, what one read of a guest's ring gives (caps,
paths, numbers), and the follower's rounds over guests that answer, are busy or misbehave."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nestor.api import events_below, events_follow, runtime
from nestor.api.events_below import Cursor, take
from nestor.api.runtime import EventBus
from nestor.errors import Conflict, GuestError


def ring(events: list[dict[str, Any]], epoch: str = "e1", last: int | None = None,
         first: int | None = None) -> dict[str, Any]:
    ids = [e["id"] for e in events if isinstance(e, dict) and isinstance(e.get("id"), int)]
    return {"epoch": epoch, "first": first if first is not None else (min(ids) if ids else None),
            "last": last if last is not None else max(ids, default=0), "events": events}


def vm_event(seq: int, vm: str = "l2", at: str | None = None, **extra: Any) -> dict[str, Any]:
    event = {"id": seq, "type": "vm", "time": 1.0, "vm": vm, "path": f"{at}/{vm}" if at else vm,
             "state": "running", "was": "off", **extra}
    if at:
        event["at"] = at
    return event


# -- the ring ----------------------------------------------------------------------------------
def test_the_ring_numbers_events_and_gives_those_after_a_number() -> None:
    bus = EventBus()
    assert bus.recent(0) == {"epoch": bus.epoch, "first": None, "last": 0, "events": []}
    for n in range(5):
        bus.publish("vm", {"vm": f"v{n}", "state": "running"})
    page = bus.recent(2, limit=2)
    assert [e["id"] for e in page["events"]] == [3, 4] and (page["first"], page["last"]) == (1, 5)
    assert page["events"][0]["path"] == "v2"  # this level's VM: its path is its name
    assert bus.recent(5)["events"] == [] and bus.recent(0, limit=0)["events"] == []


def test_the_ring_is_bounded_and_its_reader_counts_as_a_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "RING_SIZE", 10)
    bus = EventBus()
    assert not bus.listened()
    for n in range(25):
        bus.publish("operation", {"operation": str(n), "status": "running"})
    page = bus.recent(0)
    assert (page["first"], page["last"], len(page["events"])) == (16, 25, 10)
    assert bus.listened()  # the level above read it just now
    assert "path" not in page["events"][0]  # an event naming no VM has no path


def test_the_ring_read_calls_its_hook() -> None:
    bus, reads = EventBus(), []
    bus.on_read = lambda: reads.append(1)
    bus.recent(0)
    assert reads == [1]


def test_a_subscriber_with_at_gets_that_level_and_those_below() -> None:
    import asyncio

    async def follow(at: str | None, bus: EventBus, out: list[dict[str, Any]]) -> None:
        async for text in bus.subscribe(at):
            if text.startswith("data: ") or "\ndata: " in text:
                out.append(json.loads(text.split("data: ", 1)[1]))

    async def main() -> dict[str, list[str]]:
        bus = EventBus()
        got: dict[str | None, list[dict[str, Any]]] = {None: [], "l1": [], "l1/l2": []}
        tasks = [asyncio.create_task(follow(at, bus, out)) for at, out in got.items()]
        await asyncio.sleep(0.05)
        bus.publish("vm", {"vm": "web", "state": "running"})
        bus.publish("vm", {"vm": "l2", "path": "l1/l2", "at": "l1", "state": "off"})
        bus.publish("vm", {"vm": "l3", "path": "l1/l2/l3", "at": "l1/l2", "state": "off"})
        bus.publish("vm", {"vm": "x", "path": "l10/x", "at": "l10", "state": "off"})
        await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        return {str(at): [e["path"] for e in out] for at, out in got.items()}

    assert asyncio.run(main()) == {"None": ["web", "l1/l2", "l1/l2/l3", "l10/x"], "l1": ["l1/l2", "l1/l2/l3"],
                                   "l1/l2": ["l1/l2/l3"]}


# -- one read of a guest's ring --------------------------------------------------------------
def test_first_contact_starts_from_where_the_ring_stands() -> None:
    taken = take(ring([vm_event(7)], last=7), "l1", Cursor())
    assert taken.events == [] and taken.cursor == Cursor("e1", 7)


def test_events_are_rebased_under_the_guest_at_any_depth() -> None:
    answer = ring([vm_event(8), vm_event(9, "l3", at="l2"),
                   {"id": 10, "type": "level", "at": "l2", "state": "following"},
                   {"id": 11, "type": "operation", "operation": "abc", "status": "failure", "vm": "l2", "path": "l2",
                    "error": {"kind": "guest", "message": "no", "hint": None, "rule": None, "resource": {"vm": "l2"}}}])
    taken = take(answer, "l1", Cursor("e1", 7))
    assert taken.cursor == Cursor("e1", 11) and taken.dropped == 0 and not taken.more
    kinds = [kind for kind, _ in taken.events]
    data = [d for _, d in taken.events]
    assert kinds == ["vm", "vm", "level", "operation"]
    assert (data[0]["path"], data[0]["at"], data[0]["vm"], data[0]["state"]) == ("l1/l2", "l1", "l2", "running")
    assert (data[1]["path"], data[1]["at"]) == ("l1/l2/l3", "l1/l2")
    assert data[2] == {"at": "l1/l2", "state": "following"}
    assert data[3]["path"] == "l1/l2" and data[3]["error"]["resource"] == {"vm": "l2"}
    assert all("id" not in d and "time" not in d and "type" not in d for d in data)  # this level stamps its own


@pytest.mark.parametrize("bad", [
    {"vm": "l2", "path": "l9"},  # a path that is not its VM's
    {"vm": "l2", "path": "l1/l2"},  # claims a level the guest is not in
    {"vm": "l3", "path": "x/l3"},  # a path not under its at (none: the guest's own)
    {"vm": "l3", "at": "l2", "path": "l3"},
    {"vm": "../etc", "path": "../etc"},
    {"vm": "a/b", "path": "a/b"},
    {"vm": "l2", "at": "", "path": "l2"},
    {"vm": "l2", "at": "l2//x", "path": "l2//x/l2"},
    {"vm": 7, "path": 7},
    {"path": "l2"},  # a path that names no VM
    {"vm": "l2", "path": "l2", "at": "/".join(f"v{n}" for n in range(8))},  # too deep
    {"type": "root-shell"},
    {"type": None},
    {"vm": "l2", "path": "l2", "Evil-Key": 1},
    {"vm": "l2", "path": "l2", "blob": "x" * 5000},  # larger than an event may be
    {"vm": "l2", "path": "l2", "deep": {"a": {"b": {"c": 1}}}},
    {"vm": "l2", "path": "l2", "many": list(range(100))},
    {"vm": "l2", "path": "l2", "huge": 1 << 70},
    {"vm": "l2", "path": "l2", **{f"k{'abcdefghijklmnopqrstuvwxyz'[n]}": n for n in range(25)}},
])
def test_a_malformed_event_is_dropped_and_the_rest_taken(bad: dict[str, Any]) -> None:
    event = {"id": 8, "type": "vm", **bad}
    taken = take(ring([event, vm_event(9)]), "l1", Cursor("e1", 7))
    assert [d["path"] for _, d in taken.events] == ["l1/l2"] and taken.dropped == 1, taken
    assert taken.cursor.after == 9  # the dropped one does not come again


def test_strings_lose_control_characters_and_length() -> None:
    taken = take(ring([vm_event(8, state="\x1b]0;pwned\x07running" + "x" * 2000)]), "l1", Cursor("e1", 7))
    (_, data), = taken.events
    assert data["state"].startswith("]0;pwnedrunning") and len(data["state"]) <= events_below.MAX_STRING
    assert "\x1b" not in json.dumps(data)


def test_a_round_takes_at_most_its_cap_and_asks_again_for_the_rest() -> None:
    answer = ring([vm_event(n) for n in range(1, 301)], last=300)
    taken = take(answer, "l1", Cursor("e1", 0))
    assert len(taken.events) == events_below.MAX_TAKEN and taken.cursor.after == events_below.MAX_TAKEN
    assert taken.more and taken.dropped == 300 - events_below.MAX_TAKEN


def test_numbers_only_go_forward() -> None:
    answer = ring([vm_event(9), vm_event(8), vm_event(9), vm_event(5), {"id": "10", "type": "vm"}, vm_event(10),
                   vm_event(99)], last=10)
    taken = take(answer, "l1", Cursor("e1", 7))
    assert taken.cursor.after == 10 and taken.dropped == 5
    assert len(taken.events) == 2
    backwards = take(ring([], last=3), "l1", Cursor("e1", 7))  # the same run cannot count back: start there
    assert backwards.cursor == Cursor("e1", 3) and backwards.events == []


def test_a_new_epoch_starts_from_its_beginning_and_lost_events_are_counted() -> None:
    restarted = take(ring([vm_event(1), vm_event(2)], epoch="e2"), "l1", Cursor("e1", 50))
    assert restarted.restarted and restarted.cursor == Cursor("e2", 2) and len(restarted.events) == 2
    behind = take(ring([vm_event(20)], first=20), "l1", Cursor("e1", 7))
    assert behind.lost == 12 and len(behind.events) == 1


@pytest.mark.parametrize("answer", [
    None, [], "x", {}, {"epoch": "e1", "last": 1}, {"epoch": "e1", "last": "1", "events": []},
    {"epoch": "e 1", "last": 1, "events": []}, {"epoch": "e1", "last": True, "events": []},
    {"epoch": "e1", "last": -1, "events": []}, {"epoch": 5, "last": 1, "events": []},
    {"epoch": "e1", "last": 1, "events": {}},
])
def test_a_malformed_answer_is_a_value_error(answer: Any) -> None:
    with pytest.raises(ValueError):
        take(answer, "l1", Cursor("e1", 0))


# -- the follower's rounds --------------------------------------------------------------------
class Guests(events_follow.Follower):
    """The follower with its guests and their answers given (no channel, no QEMU)."""

    def __init__(self, bus: EventBus, answers: dict[str, Any]) -> None:
        super().__init__(bus, lambda: None)  # type: ignore[arg-type,return-value]
        self.answers = answers
        self.asked: list[str] = []

    def guests(self) -> list[str]:
        return list(self.answers)

    def read(self, name: str, cursor: Cursor) -> Any:
        self.asked.append(name)
        answer = self.answers[name]
        if isinstance(answer, Exception):
            raise answer
        return answer(cursor) if callable(answer) else answer


def published(bus: EventBus) -> list[dict[str, Any]]:
    return bus.recent(0)["events"]


def test_a_bad_guest_is_marked_and_the_others_still_reach_the_stream() -> None:
    bus = EventBus()
    good = {"epoch": "g", "first": 1, "last": 1, "events": [vm_event(1)]}
    follower = Guests(bus, {"bad": {"nonsense": True}, "silent": GuestError("vm 'silent': no answer"),
                            "busy": Conflict("another command is using its nestor API channel"),
                            "good": lambda c: good if c.epoch else {**good, "last": 0, "events": []}})
    follower.round()
    follower.round()
    events = published(bus)
    levels = [(e["at"], e["state"]) for e in events if e["type"] == "level"]
    assert ("bad", "unreachable") in levels and ("silent", "unreachable") in levels
    assert ("good", "following") in levels and not any(at == "busy" for at, _ in levels)
    assert [e["path"] for e in events if e["type"] == "vm"] == ["good/l2"]
    assert follower.asked.count("bad") == 1 and follower.asked.count("busy") == 2  # backoff; busy: next round
    assert levels.count(("bad", "unreachable")) == 1  # said once, not every round


def test_a_guest_that_stops_is_forgotten() -> None:
    bus = EventBus()
    follower = Guests(bus, {"l1": {"epoch": "g", "first": None, "last": 0, "events": []}})
    follower.round()
    assert "l1" in follower.cursors
    follower.answers = {}
    follower.round()
    assert follower.cursors == {}


def test_the_follower_runs_only_while_anyone_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    bus = EventBus()
    follower = Guests(bus, {"l1": {"epoch": "g", "first": None, "last": 0, "events": []}})
    stop = threading.Event()
    monkeypatch.setattr(events_follow, "INTERVAL", 0.01)
    monkeypatch.setattr(events_follow, "QUIET_MAX", 0.0)
    ticks = []
    monkeypatch.setattr(stop, "wait", lambda t: ticks.append(t) or len(ticks) > 5)
    follower.run(stop)
    assert follower.asked == []
    bus.recent(0)  # the level above reads this level's ring: its guests are followed too
    ticks.clear()
    follower.run(stop)
    assert follower.asked == ["l1"] * 5
    assert [e["state"] for e in published(bus) if e["type"] == "level"] == ["following"]
    bus.last_read = None  # nobody listens any more: when someone does again, from then on
    ticks.clear()
    follower.run(stop)
    assert follower.cursors == {} and follower.asked == ["l1"] * 5
    bus.recent(0)
    ticks.clear()
    follower.run(stop)
    assert [e["state"] for e in published(bus) if e["type"] == "level"] == ["following", "following"]


def test_the_recent_route_is_answered_without_fastapi(tmp_path: Path) -> None:
    """An L1 answers the level above's reads on its channel before FastAPI loads (the plain dispatcher)."""
    from nestor.api import handlers
    from nestor.api.runtime import Runtime
    from nestor.api.table import Ctx, Settings, dispatch

    settings = Settings(tmp_path)
    rt = Runtime(settings)
    rt.events.publish("vm", {"vm": "l2", "state": "running"})
    done = dispatch(handlers.table, Ctx(settings, rt), "GET", "/v1/events/recent?after=0&limit=5", {}, b"")
    assert done is not None and done.status == 200
    page = json.loads(done.body)
    assert page["epoch"] == rt.events.epoch and [e["path"] for e in page["events"]] == ["l2"]
    too_many = dispatch(handlers.table, Ctx(settings, rt), "GET", "/v1/events/recent?limit=5000", {}, b"")
    assert too_many is None  # out of bounds: FastAPI's 400, like every invalid input


def test_a_quiet_guest_is_asked_less_often_and_a_busy_one_again_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    class Clock:
        now = 1000.0

        @classmethod
        def monotonic(cls) -> float:
            return cls.now

    monkeypatch.setattr(events_follow, "time", Clock)
    bus = EventBus()
    news = [0]

    def quiet(cursor: Cursor) -> dict[str, Any]:
        return {"epoch": "g", "first": None, "last": 0, "events": []}

    def lively(cursor: Cursor) -> dict[str, Any]:
        news[0] += 1
        return {"epoch": "g", "first": 1, "last": news[0], "events": [vm_event(news[0])]}

    follower = Guests(bus, {"quiet": quiet, "lively": lively, "busy": Conflict("busy")})
    for _ in range(20):  # 20 rounds, one a second
        follower.round()
        Clock.now += events_follow.INTERVAL
    assert follower.asked.count("lively") == 20 and follower.asked.count("busy") == 20
    assert 5 <= follower.asked.count("quiet") <= 9  # every QUIET_MAX s once it has been quiet a while
    assert len([e for e in published(bus) if e.get("path") == "lively/l2"]) == 19  # the first: where it stood


# -- nestor events ------------------------------------------------------------------------------
def test_the_cli_line_names_the_path_and_escapes_what_a_guest_sent() -> None:
    from nestor.cli.events import line

    text = line({"id": 3, "type": "vm", "time": 0.0, "vm": "l2", "path": "l1/l2", "at": "l1", "state": "running",
                 "was": "off"})
    assert text.endswith("vm         l1/l2  running (was off)"), text
    level = line({"type": "level", "time": 0.0, "at": "l1", "state": "unreachable", "error": "no\x1b[2J answer\nx"})
    assert "l1  unreachable: no\\x1b[2J answer\\nx" in level and "\x1b" not in level and "\n" not in level


@pytest.mark.parametrize(("argv", "wanted"), [
    (["events", "--at", "l1//x"], "is not a VM path"),
    (["events"], "no nestor daemon answers on"),
])
def test_the_cli_refuses_in_one_line(argv: list[str], wanted: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from nestor.cli.main import main

    home = tmp_path / "home"
    with pytest.raises(SystemExit) as exit_info:
        main(["--home", str(home), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code != 0 and len(err) == 2 and wanted in err[0] and err[1].startswith("hint: "), err
    assert not home.exists()  # a command that only reads made nothing
