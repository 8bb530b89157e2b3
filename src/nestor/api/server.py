"""`nestor serve`: the home's daemon.

It claims its home (one daemon per home), then runs until SIGTERM:
- the API on a unix socket (default under /run/nestor/, mode 0660, group `nestor` if it exists);
- the memory balancer of every dynamic VM (service/balancer.py);
- a state watcher that turns every VM state change into an event, whoever caused it;
- in a nested-host guest, the channel to the host (service/channel.py): framed requests from
  its virtio-serial port, forwarded to the local API.
Started on demand (`--on-demand`, by the CLI for dynamic memory) it exits once no dynamic VM
has run for IDLE_EXIT seconds and no client is watching or waiting.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from types import FrameType

from .. import paths
from ..errors import Conflict, HostError
from ..service import balancer as balancer_mod
from ..service import daemon
from ..service.core import Core
from .app import Settings, create_app
from .runtime import Runtime

IDLE_EXIT = 60.0
WATCH_INTERVAL = 1.0
SOCKET_GROUP = "nestor"

log = logging.getLogger("nestor.serve")


def bind_unix(path: Path) -> socket.socket:
    """A listening unix socket, mode 0660 (group `nestor` when that group exists), made before
    anything can connect: the daemon runs as root, so the socket is its front door."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
            raise Conflict(f"another nestor serve listens on {path}", hint="stop it, or give --socket PATH")
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)  # a stale socket of a daemon that died
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise HostError(f"cannot listen on {path}: {exc}", hint="give --socket PATH in a writable directory") from exc
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    with contextlib.suppress(KeyError, PermissionError):
        os.chown(path, -1, grp.getgrnam(SOCKET_GROUP).gr_gid)
    sock.listen(128)
    return sock


def watch_states(home: Path, netns: str | None, runtime: Runtime, stop: threading.Event) -> None:
    """Publish `vm` events for every observed state change (CLI-made ones too)."""
    from ..service.vms import VMs

    vms = VMs(Core(home, netns))  # made in this thread: sqlite connections stay in their thread
    last: dict[str, str] = {}
    while not stop.wait(WATCH_INTERVAL):
        try:
            now = {info.name: info.state.value for info in vms.list_all()}
        except Exception:
            log.exception("state watch failed")
            continue
        for name, state in now.items():
            if last.get(name) != state and name in last:
                runtime.events.publish("vm", {"vm": name, "state": state, "was": last[name]})
        for name in set(last) - set(now):
            runtime.events.publish("vm", {"vm": name, "state": "removed", "was": last[name]})
        last = now


def serve(home: Path, sock_path: Path | None = None, netns: str | None = None, on_demand: bool = False,
          channel: Path | None = None) -> int:
    import uvicorn

    home_paths = paths.Home(home)
    claim = daemon.Claim(home_paths)
    if not claim.acquire():
        log.info("another nestor serve holds %s: exiting", home)
        return 0
    stop = threading.Event()
    try:
        settings = Settings(home, netns)
        runtime = Runtime(settings)
        from ..service.vms import VMs

        cleaned = VMs(Core(home, netns)).reconcile()
        if cleaned:
            log.info("reconciled VMs whose QEMU had gone: %s", ", ".join(cleaned))
        sock_path = sock_path or home_paths.api_socket
        listener = bind_unix(sock_path)
        app = create_app(settings, runtime)
        server = uvicorn.Server(uvicorn.Config(app, fd=listener.fileno(), log_level="warning", lifespan="off",
                                               timeout_graceful_shutdown=5))
        started = time.monotonic()
        balancers: list[balancer_mod.Balancer] = []

        def run_balancer() -> None:
            balancer = balancer_mod.Balancer(
                Core(home, netns),  # made in this thread: sqlite connections stay in their thread
                on_decision=lambda vm, d, mem: runtime.events.publish(
                    "balancer", {"vm": vm, "held": d.held, "reason": d.reason, "target": d.target,
                                 "actual": mem.actual, "rule": "R7" if d.held and "R7" in d.reason else None}))
            balancers.append(balancer)
            balancer.run(stop)

        threads = [threading.Thread(target=run_balancer, name="balancer", daemon=True),
                   threading.Thread(target=watch_states, args=(home, netns, runtime, stop), name="watch", daemon=True)]
        if channel is not None:
            from ..service import channel as channel_mod

            threads.append(threading.Thread(target=channel_mod.serve_channel, args=(channel, sock_path, stop),
                                            name="channel", daemon=True))
        if on_demand:
            def idle() -> None:
                while not stop.wait(5.0):
                    last_active = balancers[0].last_active if balancers else started
                    quiet = time.monotonic() - last_active > IDLE_EXIT
                    if quiet and runtime.events.subscribers == 0 and not any(
                            op["status"] in ("pending", "running") for op in runtime.operations.list()):
                        log.info("no dynamic VM for %.0f s: exiting", IDLE_EXIT)
                        server.should_exit = True
                        return
            threads.append(threading.Thread(target=idle, name="idle", daemon=True))
        for thread in threads:
            thread.start()

        def terminate(signum: int, frame: FrameType | None) -> None:
            server.should_exit = True

        signal.signal(signal.SIGTERM, terminate)
        log.info("nestor serve: home %s, socket %s", home, sock_path)
        server.run()
        stop.set()
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            if sock_path.is_socket():
                sock_path.unlink()
        return 0
    finally:
        stop.set()
        claim.release()
