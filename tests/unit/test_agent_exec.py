"""Agent.exec's one deadline and its never-retried status polls (QGA forgets a pid once it
reported its end): a fake agent on a unix socket, speaking QGA's JSON lines."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nestor.engine.qmp import Agent
from nestor.errors import GuestError

Answer = Callable[[dict[str, Any]], dict[str, Any] | None]


@pytest.fixture
def fake_agent(tmp_path: Path) -> Iterator[Callable[[Answer], tuple[Path, list[str]]]]:
    servers: list[socket.socket] = []

    def start(answer: Answer) -> tuple[Path, list[str]]:
        path = tmp_path / "qga.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        server.listen(1)
        servers.append(server)
        seen: list[str] = []

        def serve() -> None:
            conn, _ = server.accept()
            buffer = b""
            with conn:
                while True:
                    try:
                        chunk = conn.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    buffer += chunk.replace(b"\xff", b"")
                    while b"\n" in buffer or buffer.strip().endswith(b"}"):
                        line, _, buffer = buffer.partition(b"\n")
                        if not line.strip():
                            continue
                        request = json.loads(line)
                        seen.append(request["execute"])
                        if request["execute"] == "guest-sync-delimited":
                            conn.sendall(b"\xff" + json.dumps({"return": request["arguments"]["id"]}).encode() + b"\n")
                            continue
                        reply = answer(request)
                        if reply is not None:
                            reply["id"] = request.get("id")
                            conn.sendall(json.dumps(reply).encode() + b"\n")

        threading.Thread(target=serve, daemon=True).start()
        return path, seen

    yield start
    for server in servers:
        server.close()


def test_exec_collects_the_exit_once(fake_agent: Callable[[Answer], tuple[Path, list[str]]]) -> None:
    polls = iter([{"exited": False}, {"exited": True, "exitcode": 3, "out-data": "aGk="}])

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        if request["execute"] == "guest-exec":
            return {"return": {"pid": 42}}
        return {"return": next(polls)}

    path, seen = fake_agent(answer)
    with Agent(path, "l2", timeout=10) as agent:
        assert agent.exec(["true"], timeout=10) == (3, b"hi", b"")
    assert seen.count("guest-exec-status") == 2


def test_a_lost_status_answer_is_not_polled_again(fake_agent: Callable[[Answer], tuple[Path, list[str]]]) -> None:
    """The status poll gets no answer in time: one error naming the lost exit, no second poll
    (which QGA would answer with "Invalid parameter 'pid'" had the first reported the end)."""

    def answer(request: dict[str, Any]) -> dict[str, Any] | None:
        if request["execute"] == "guest-exec":
            return {"return": {"pid": 42}}
        return None  # the answer is lost

    path, seen = fake_agent(answer)
    with Agent(path, "l2", timeout=30) as agent, pytest.raises(GuestError) as err:
        agent.exec(["sleep", "9"], timeout=1.5)
    assert "pid 42" in err.value.message and "lost" in err.value.message
    assert seen.count("guest-exec-status") == 1


def test_a_forgotten_pid_names_the_cause(fake_agent: Callable[[Answer], tuple[Path, list[str]]]) -> None:
    def answer(request: dict[str, Any]) -> dict[str, Any]:
        if request["execute"] == "guest-exec":
            return {"return": {"pid": 42}}
        return {"error": {"class": "GenericError", "desc": "Invalid parameter 'pid'"}}

    path, _ = fake_agent(answer)
    with Agent(path, "l2", timeout=10) as agent, pytest.raises(GuestError) as err:
        agent.exec(["true"], timeout=10)
    assert "no longer knows pid 42" in err.value.message


def test_the_exec_deadline_is_the_session_s(fake_agent: Callable[[Answer], tuple[Path, list[str]]]) -> None:
    """A command that runs on past the session's deadline: 'did not finish', polls stopped."""

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        if request["execute"] == "guest-exec":
            return {"return": {"pid": 7}}
        return {"return": {"exited": False}}

    path, _ = fake_agent(answer)
    with Agent(path, "l2", timeout=1.5) as agent, pytest.raises(GuestError) as err:
        agent.exec(["sleep", "99"], timeout=60)
    assert "did not finish" in err.value.message or "lost" in err.value.message
