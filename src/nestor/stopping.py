"""The daemon's SIGTERM and SIGINT, caught from its first line until its event loop takes them.

With Python's default handler a SIGTERM that arrives while `nestor serve` starts (its imports,
the claim, the reconcile, the channel's first answers on an L1 before the main thread gets on)
kills the process by the signal (exit -15): its socket and pidfile stay behind and init or
systemd see a crash. So the daemon's command line installs `catch()` before it imports anything
else (nestor/__main__.py recognises it with `daemon_argv`), serve() does again (in-process
callers), and the signal only sets an event the daemon checks at each step of its start and
then ends cleanly; once uvicorn's loop runs, the loop's own handlers stop the servers.
Standard library only: this runs before the rest of nestor is imported.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)
GLOBAL_OPTIONS = ("--home", "--netns", "--remote")  # the CLI's options that take a value (cli/main.py)

_ended: threading.Event | None = None


def daemon_argv(argv: list[str]) -> bool:
    """Is this command line (without the program) `nestor [global options] serve ...`?"""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in GLOBAL_OPTIONS:
            i += 2
        elif word == "--debug" or word.partition("=")[0] in GLOBAL_OPTIONS:
            i += 1
        else:
            return word == "serve"
    return False


def catch() -> threading.Event:
    """Install the handlers (main thread only; again after an event loop removed its own) and
    return the event they set; the same event until `release()`."""
    global _ended
    if _ended is None:
        _ended = threading.Event()
    ended = _ended
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, lambda *_: ended.set())
    return ended


def release() -> None:
    """The default handlers again, and a fresh event for the next catch() (a daemon has ended)."""
    global _ended
    _ended = None
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
