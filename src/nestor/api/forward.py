"""The API's levels: a request with `at=l1/l2` is answered by the nestor at that level.

One layer before every route handler (FastAPI's middleware in api/app.py, and the plain
dispatcher of an L1's channel in api/table.py) passes such a request on through the first
VM's channel (Service.guest), with `at` one level shorter, and answers what came back. So every
/v1 route works at any depth, and the level below forwards again. An error about a level
itself (no such VM, not running, its nestor silent) carries the header LEVEL_HEADER with the
path of that level, which each level above makes longer and rewords (hypervisor.level_error):
`vm 'l1/l9': no VM 'l9' in l1`. Standard library only until a request is forwarded.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import TYPE_CHECKING

from ..errors import InvalidInput, NestorError
from .table import API_PREFIX, Answer, error_answer

if TYPE_CHECKING:
    from .table import Settings

LEVEL_HEADER = "x-nestor-level"
EVENTS = API_PREFIX + "/events"  # this level's stream, with the levels below (api/events_follow.py)
STREAMS = ("/events", "/console")  # answered as a stream: not through a level's channel (yet)
PASSED_HEADERS = ("content-type", "accept")
DROPPED_ANSWER_HEADERS = ("content-length", "transfer-encoding", "connection", "content-encoding")
SLACK = 15.0  # seconds beyond a request's own wait (?wait=, ?timeout=) that its answer may take


def split_at(query: str) -> tuple[str, str]:
    """(the `at` parameter, the query without it); '' when there is none (this level)."""
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    at = [v for k, v in pairs if k == "at"]
    if len(at) > 1:
        raise InvalidInput("at is given more than once", hint="one VM path, e.g. ?at=l1/l2")
    rest = urllib.parse.urlencode([(k, v) for k, v in pairs if k != "at"])
    return (at[0] if at else ""), rest


def wanted(path: str, query: str) -> bool:
    """Does this request go to a level below (a /v1 path with a non-empty `at`)? Not the event
    stream: this level's carries the events of every level below, and `at` filters it."""
    return (path == API_PREFIX or path.startswith(API_PREFIX + "/")) and path != EVENTS and "at=" in query \
        and bool(_at_or_bad(query))


def _at_or_bad(query: str) -> str:
    try:
        return split_at(query)[0]
    except InvalidInput:
        return "?"  # forward() answers the refusal


def _timeout(query: str) -> float:
    """How long the answer may take: the channel's default, or the request's own wait and more."""
    from ..service.channel import GUEST_TIMEOUT

    longest = 0.0
    for key, value in urllib.parse.parse_qsl(query):
        if key in ("wait", "timeout"):
            try:
                longest = max(longest, float(value))
            except ValueError:
                pass
    return max(GUEST_TIMEOUT, min(longest, 86400.0) + SLACK)


def forward(settings: Settings, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> Answer:
    """The answer of the level named by the query's `at` to this request."""
    from ..hypervisor import split_levels

    try:
        at, rest = split_at(query)
        levels = split_levels(at)
        if path.endswith(STREAMS) or path.rpartition("/")[2] in ("events", "console"):
            raise InvalidInput(f"{path} is a stream: it is not forwarded to a level below yet",
                               hint="open it on that level's own API, e.g. nestor vm exec l1 -- nestor ...")
    except NestorError as err:
        return error_answer(err)
    first, below = levels[0], levels[1:]
    if below:
        rest = urllib.parse.urlencode([*urllib.parse.parse_qsl(rest, keep_blank_values=True), ("at", "/".join(below))])
    passed = {k: v for k, v in headers.items() if k.lower() in PASSED_HEADERS}
    with settings.service() as service:
        try:
            level = service.guest(first)
        except NestorError as err:
            answer = error_answer(err)
            answer.headers[LEVEL_HEADER] = first
            return answer
        try:
            with level:
                response = level.forward(method, path, rest, passed, body, timeout=_timeout(query))
        except NestorError as err:
            answer = error_answer(err)
            answer.headers[LEVEL_HEADER] = first
            return answer
    answer_headers = {k: v for k, v in response.headers.items() if k.lower() not in DROPPED_ANSWER_HEADERS}
    content_type = answer_headers.pop("content-type", None)
    deeper = answer_headers.pop(LEVEL_HEADER, None)
    if deeper is not None and response.status_code >= 400:
        return _reworded(first, deeper, response.status_code, response.content, content_type)
    return Answer(response.status_code, response.content, content_type, answer_headers)


def _reworded(first: str, deeper: str, status: int, content: bytes, content_type: str | None) -> Answer:
    """A level below `first` failed (the header names it): its error, naming the level from here."""
    from ..hypervisor import level_error

    path = f"{first}/{deeper}"
    try:
        err = NestorError.from_json(json.loads(content)["error"])
    except (ValueError, KeyError, TypeError):
        return Answer(status, content, content_type, {LEVEL_HEADER: path})
    answer = error_answer(level_error(path, path.rpartition("/")[0], err))
    answer.headers[LEVEL_HEADER] = path
    return answer
