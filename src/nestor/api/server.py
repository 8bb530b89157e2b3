"""`nestor serve`: the home's daemon.

It claims its home (one daemon per home), then runs until SIGTERM:
- the API on a unix socket (default under /run/nestor/, mode 0660, group `nestor` if it exists);
- the memory balancer of every dynamic VM (service/balancer.py);
- the cap on every VM's serial log (engine/seriallog.py: copytruncate past the cap, checked
  every CHECK_INTERVAL s), which is why `vm start` starts the daemon for every VM;
- a state watcher that turns every VM state change into an event, whoever caused it;
- a follower of the levels below (api/events_follow.py): while anyone listens, the events of
  each nested-host guest reach this level's stream, with their VM paths;
- in a nested-host guest, the channel to the host (service/channel.py): framed requests from
  its virtio-serial port, answered by the plain dispatcher over the route table (api/table.py)
  or forwarded to the local API. There FastAPI, pydantic and uvicorn are imported only when
  first needed (a request the dispatcher leaves to FastAPI, or a client on the unix socket,
  which waits in the socket's backlog meanwhile): under TCG they are most of an L1's start.
Started on demand (`--on-demand`, by the CLI when a VM starts) it exits once no VM has run for
IDLE_EXIT seconds and no client is watching or waiting.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import paths, stopping
from ..engine import process, seriallog
from ..errors import Conflict, HostError, InvalidInput
from ..service import balancer as balancer_mod
from ..service import daemon
from ..service.core import Core
from .runtime import Runtime
from .table import Ctx, Settings

if TYPE_CHECKING:
    import uvicorn

IDLE_EXIT = 60.0
WATCH_INTERVAL = 1.0
SLOW_REQUEST = 0.5  # a channel request taking longer is logged with its time
SOCKET_GROUP = "nestor"

log = logging.getLogger("nestor.serve")
log.addHandler(logging.NullHandler())


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

    def states() -> dict[str, str] | None:
        try:
            return {info.name: info.state.value for info in vms.list_all()}
        except Exception:
            log.exception("state watch failed")
            return None

    last = states() or {}  # the baseline: what ran before the daemon is no event
    while not stop.wait(WATCH_INTERVAL):
        now = states()
        if now is None:
            continue
        for name, state in now.items():
            if last.get(name) != state:  # a VM new since the last look reports its state too (was: null)
                runtime.events.publish("vm", {"vm": name, "state": state, "was": last.get(name)})
        for name in set(last) - set(now):
            runtime.events.publish("vm", {"vm": name, "state": "removed", "was": last[name]})
        last = now


def cap_logs(home: paths.Home, stop: threading.Event) -> None:
    """The cap of every log a guest can grow (engine/seriallog.py: each VM's serial.log and
    qemu.log, each NAT's dnsmasq log); no process per VM: one stat each per look."""
    cap = seriallog.cap_from_env()
    while not stop.wait(seriallog.CHECK_INTERVAL):
        try:
            seriallog.enforce_home(home.root, cap)
        except Exception:
            log.exception("log cap failed")


def any_vm_running(home: paths.Home) -> bool:
    try:
        return any(process.live_pid(vm_dir) is not None for vm_dir in home.vms.iterdir())
    except OSError:
        return False


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or :PORT (all addresses) for --listen."""
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or len(port) > 5 or not 0 <= int(port) < 65536:
        raise InvalidInput(f"invalid --listen address '{text}'", hint="give HOST:PORT, e.g. 127.0.0.1:8443 or [::1]:8443")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def check_host_name(text: str) -> str:
    """A name for --allow-host: a DNS name or an IP address (no port), lower case."""
    import re

    from . import guard

    name = text.strip().lower().strip("[]").rstrip(".")
    if not (guard.is_address(name) or re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*",
                                                     name)):
        raise InvalidInput(f"invalid --allow-host name '{text[:100]}'",
                           hint="give a host name or address without a port, e.g. --allow-host nestor.example.org")
    return name


def tcp_hosts(listen_host: str, extra: tuple[str, ...]) -> tuple[str, ...]:
    """The Host names the TCP server answers for (api/guard.py adds the loopback ones and any
    address): --allow-host's, the --listen name, and the machine's names when it listens on all."""
    names = list(extra)
    if listen_host in ("0.0.0.0", "::"):
        names += [socket.gethostname().lower(), socket.getfqdn().lower()]
    else:
        names.append(listen_host.lower())
    return tuple(dict.fromkeys(names))


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise HostError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                        hint="choose another --listen address or port") from exc
    sock.listen(128)
    return sock


def _server(app: Any, ssl_certfile: str | None = None, ssl_keyfile: str | None = None) -> uvicorn.Server:
    import uvicorn

    class _Server(uvicorn.Server):
        """One of several servers in one event loop: the daemon handles the signals, not each server."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    from . import peer

    return _Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=5,
                                  ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, http=peer.protocol()))


def uptime() -> float | None:
    """The kernel's uptime (what an L1's boot log counts in), for the daemon's own timing lines."""
    try:
        with open("/proc/uptime") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def process_start() -> float | None:
    """The kernel's uptime when this process started (its python3 exec)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return round(int(fields[19]) / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError):
        return None


def plain_answerer(settings: Settings, runtime: Runtime, wanted: threading.Event) -> Any:
    """The channel's local answer (channel_guest.LocalAnswer): the route table's plain dispatcher;
    what it leaves to FastAPI sets `wanted` (the full server loads) and goes to the socket."""
    from ..service.audit import CHANNEL, acting
    from . import handlers
    from .table import dispatch

    ctx = Ctx(settings, runtime)
    first = [True]

    def answer(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        started = time.monotonic()
        with acting(CHANNEL):  # the host asks, through this L1's virtio-serial channel (audit log)
            done = dispatch(handlers.table, ctx, method, path, headers, body)
        took = time.monotonic() - started
        if took >= SLOW_REQUEST:
            log.info("channel: %s %s took %.1f s", method, path.partition("?")[0], took)
        if done is None:
            if not wanted.is_set():
                log.info("channel: %s %s is FastAPI's: loading it", method, path.partition("?")[0])
            wanted.set()
            return None
        if first[0]:
            first[0] = False
            log.info("channel: first answer (%s %s) at uptime %s s", method, path.partition("?")[0], uptime())
            threading.Thread(target=prewarm, name="prewarm", daemon=True).start()
        answer_headers = dict(done.headers)
        if done.media_type:
            answer_headers = {"content-type": done.media_type, **answer_headers}
        return done.status, answer_headers, done.body
    return answer


PREWARM = ("nestor.service.network", "pyroute2")  # what a nested level's next requests need (NAT, l2)


def prewarm() -> None:
    """Import what the host's next requests to an L1 need (its network: pyroute2 alone is
    seconds under TCG), while the request thread waits on the host or on subprocesses (ip, nft,
    dnsmasq) and leaves the interpreter free. A request that needs a module being imported here
    waits for it (the import lock), it does not import it twice."""
    import importlib

    for name in PREWARM:
        try:
            importlib.import_module(name)
        except Exception:  # only a head start: the request that needs it reports any failure
            log.debug("prewarm of %s failed", name, exc_info=True)
    log.info("channel: prewarmed %s (uptime %s s)", ", ".join(PREWARM), uptime())


def wait_for_client(listener: socket.socket, wanted: threading.Event, done: threading.Event) -> None:
    """Set `wanted` once a client connects to the unix socket (it waits in the backlog)."""
    poller = select.poll()
    poller.register(listener.fileno(), select.POLLIN)
    while not wanted.is_set() and not done.is_set():
        if poller.poll(500):
            log.info("a client on the API socket: loading FastAPI")
            wanted.set()


def _plain_signals_in_child() -> None:
    """In a child forked from the daemon (pyroute2 forks to enter a network namespace): drop the
    event loop's signal wakeup fd and handlers. That fd is a socket shared with the parent, so a
    SIGTERM sent to the child (pyroute2 ends its helper that way) would otherwise be read by the
    daemon's loop as its own SIGTERM, and the daemon would exit after any --netns network call."""
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)


_AT_FORK: list[bool] = []


def _children_get_plain_signals() -> None:
    if not _AT_FORK:
        os.register_at_fork(after_in_child=_plain_signals_in_child)
        _AT_FORK.append(True)


async def _run_all(servers: list[tuple[uvicorn.Server, socket.socket]], ended: threading.Event) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    _children_get_plain_signals()

    def shutdown() -> None:
        ended.set()
        for server, _sock in servers:
            server.should_exit = True

    for sig in stopping.SIGNALS:
        loop.add_signal_handler(sig, shutdown)
    if ended.is_set():  # a signal between the last look and the loop's own handlers
        shutdown()
    try:
        await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in servers))
    finally:
        for sig in stopping.SIGNALS:
            loop.remove_signal_handler(sig)
        stopping.catch()  # the cleanup that follows ends cleanly too


def serve(home: Path, sock_path: Path | None = None, netns: str | None = None, on_demand: bool = False,
          channel: Path | None = None, listen: str | None = None, files_dir: Path | None = None,
          allow_hosts: tuple[str, ...] = ()) -> int:
    """Run the daemon until SIGTERM. With `listen` (HOST:PORT) the API is also served over TCP with
    TLS (HOME/tls/, made on first start) by a second server in the same loop: its own app instance,
    which refuses every request without a valid bearer token; both share the runtime (operations,
    events). With `channel` (and no `listen`) the channel is answered first and FastAPI loads
    when first needed (the module's doc). SIGTERM or SIGINT at any point ends it cleanly (exit 0):
    stopping.py catches them from the process's first line."""
    ended = stopping.catch()  # SIGTERM, or idle, before the servers run (already set: end now)
    _children_get_plain_signals()  # a forked child must not inherit that handler (it would not end)
    try:
        return _serve(home, sock_path, netns, on_demand, channel, listen, files_dir, allow_hosts, ended)
    finally:
        stopping.release()


def _serve(home: Path, sock_path: Path | None, netns: str | None, on_demand: bool, channel: Path | None,
           listen: str | None, files_dir: Path | None, allow_hosts: tuple[str, ...], ended: threading.Event) -> int:
    home_paths = paths.Home(home)
    address = parse_listen(listen) if listen else None
    hosts = tuple(check_host_name(name) for name in allow_hosts)
    if ended.is_set():
        log.info("stopped by a signal before it started")
        return 0
    paths.check_takeover(home, create=True)  # before the claim writes serve.lock there
    claim = daemon.Claim(home_paths)
    if not claim.acquire():
        if on_demand:  # the CLI raced another start: that daemon serves
            log.info("another nestor serve holds %s: exiting", home)
            return 0
        stopped = daemon.take_over(home_paths, claim) if daemon.on_demand_pid(home_paths) is not None else None
        if claim.held:
            log.info("took over %s from its on-demand daemon (pid %s, stopped)", home, stopped)
        else:
            pid = daemon.running_pid(home_paths)
            raise Conflict(f"another nestor serve{f' (pid {pid})' if pid else ''} runs for {home}",
                           hint=f"stop it first (one daemon per home){f': kill {pid}' if pid else ''}")
    daemon.mark_serving(home_paths)
    stop = threading.Event()
    # The serial-log cap first: a guest may be flooding its console while the API is still being
    # built (imports, reconcile, the app), and a restarted daemon must cap at once.
    threading.Thread(target=cap_logs, args=(home_paths, stop), name="logcap", daemon=True).start()
    sockets: list[socket.socket] = []
    servers: list[tuple[uvicorn.Server, socket.socket]] = []
    wanted = threading.Event()  # FastAPI is needed (set at once unless the channel comes first)
    try:
        settings = Settings(home, netns, files=files_dir, hosts=hosts)
        runtime = Runtime(settings)
        from ..service.vms import VMs

        cleaned = VMs(Core(home, netns)).reconcile()
        if cleaned:
            log.info("reconciled VMs whose QEMU had gone: %s", ", ".join(cleaned))
        sock_path = sock_path or home_paths.api_socket
        listener = bind_unix(sock_path)
        sockets.append(listener)
        threads: list[threading.Thread] = []
        if channel is not None:
            from ..service import channel_guest as channel_mod

            threads.append(threading.Thread(
                target=channel_mod.serve_channel, name="channel", daemon=True,
                args=(channel, sock_path, stop, plain_answerer(settings, runtime, wanted))))
        if channel is None or address is not None:
            wanted.set()
        else:
            threads.append(threading.Thread(target=wait_for_client, args=(listener, wanted, ended),
                                            name="socket-watch", daemon=True))
        balancers: list[balancer_mod.Balancer] = []
        started = time.monotonic()

        def run_balancer() -> None:
            balancer = balancer_mod.Balancer(
                Core(home, netns),  # made in this thread: sqlite connections stay in their thread
                on_decision=lambda vm, d, mem: runtime.events.publish(
                    "balancer", {"vm": vm, "held": d.held, "reason": d.reason, "target": d.target,
                                 "actual": mem.actual, "rule": "R7" if d.held and "R7" in d.reason else None}))
            balancers.append(balancer)
            balancer.run(stop)

        threads.append(threading.Thread(target=run_balancer, name="balancer", daemon=True))
        # The state watcher feeds the event stream, which has no subscriber before FastAPI runs:
        # on the lazy path it starts with FastAPI (an L1's first steps need its CPU), or when the
        # level above first reads this level's ring of events (api/events_follow.py), whichever
        # comes first.
        watch = threading.Thread(target=watch_states, args=(home, netns, runtime, stop), name="watch", daemon=True)
        watch_lock = threading.Lock()

        def start_watch() -> None:
            with watch_lock:
                if not watch.is_alive() and watch.ident is None:
                    watch.start()

        runtime.events.on_read = start_watch
        from . import events_follow

        events_follow.start(runtime.events, home, netns, stop)  # idle until anyone listens
        if on_demand:
            def idle() -> None:
                last_vm = started
                while not stop.wait(5.0):
                    if any_vm_running(home_paths):  # the log cap is needed while any VM runs
                        last_vm = time.monotonic()
                    last_active = max(balancers[0].last_active if balancers else started, last_vm)
                    quiet = time.monotonic() - last_active > IDLE_EXIT
                    if quiet and runtime.events.subscribers == 0 and not any(
                            op["status"] in ("pending", "running") for op in runtime.operations.list()):
                        log.info("no VM for %.0f s: exiting", IDLE_EXIT)
                        ended.set()
                        for server, _sock in servers:
                            server.should_exit = True
                        return
            threads.append(threading.Thread(target=idle, name="idle", daemon=True))
        for thread in threads:
            thread.start()
        if wanted.is_set():
            start_watch()
        elif channel is not None:
            from .. import faults

            faults.pause("serve:channel", ended.is_set)  # the channel answers; this thread waits

        if not wanted.is_set():
            log.info("nestor serve: home %s, channel %s answered without FastAPI (uptime %s s; process started at %s s)",
                     home, channel, uptime(), process_start())
            if not _wait_lazily(wanted, ended):
                return 0
            start_watch()
        servers += _servers(home, netns, settings, runtime, listener, address, sockets)
        log.info("nestor serve: home %s, socket %s (uptime %s s)", home, sock_path, uptime())
        if ended.is_set():
            return 0
        import asyncio

        asyncio.run(_run_all(servers, ended))
        return 0
    finally:
        stop.set()
        ended.set()
        for sock in sockets:
            sock.close()
        with contextlib.suppress(FileNotFoundError):
            if sock_path is not None and sock_path.is_socket() and sockets:
                sock_path.unlink()
        claim.release()


def main_channel(home: str, port: str) -> int:
    """`nestor --home HOME serve --channel PORT` without the CLI (nestor/__main__.py): the same
    checks, logging and daemon as the CLI's `serve`, its errors as the CLI's one-line messages."""
    import sys

    from ..errors import NestorError

    try:
        root = paths.check_home(home)
        logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
        return serve(root.resolve(), None, None, channel=Path(port))
    except NestorError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _wait_lazily(wanted: threading.Event, ended: threading.Event) -> bool:
    """Wait until FastAPI is wanted (True) or the daemon is to end (False: SIGTERM or SIGINT,
    whose handler serve() installed first thing, or idle)."""
    while not wanted.wait(0.5):
        if ended.is_set():
            return False
    return not ended.is_set()


def _servers(home: Path, netns: str | None, settings: Settings, runtime: Runtime, listener: socket.socket,
             address: tuple[str, int] | None, sockets: list[socket.socket]) -> list[tuple[uvicorn.Server, socket.socket]]:
    """The uvicorn servers: the unix socket's, and with `address` the TCP one (TLS, tokens)."""
    from .app import create_app

    servers = [(_server(create_app(settings, runtime)), listener)]
    if address is not None:
        from . import tls

        files = tls.ensure(home, address[0])
        tcp = bind_tcp(*address)
        sockets.append(tcp)
        tcp_app = create_app(Settings(home, netns, require_token=True, files=settings.files,
                                      hosts=tcp_hosts(address[0], settings.hosts), any_address=True), runtime)
        servers.append((_server(tcp_app, ssl_certfile=str(files.cert), ssl_keyfile=str(files.key)), tcp))
        bound = tcp.getsockname()
        log.info("nestor serve: TLS on %s:%d (bearer tokens: nestor token new NAME); clients trust the CA %s",
                 bound[0], bound[1], files.ca_cert)
    return servers
