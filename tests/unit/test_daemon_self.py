"""The daemon's own requests never start another daemon (an L1's API served `vm start` and
`vm list` would otherwise spawn a `nestor serve` per request, each a cold Python under TCG)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nestor import paths
from nestor.service import daemon
from nestor.service.core import Core


def test_a_daemon_does_not_start_a_daemon_for_its_own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[Path] = []
    monkeypatch.setattr(daemon, "ensure_running", lambda home, **_: started.append(home.root))
    home = paths.Home(tmp_path / "home")
    monkeypatch.setattr(daemon, "_serving", None)
    Core(tmp_path / "home").ensure_daemon()
    assert started == [tmp_path / "home"]  # a CLI command: it starts the home's daemon

    daemon.mark_serving(home)
    assert daemon.serving(home) and not daemon.serving(paths.Home(tmp_path / "other"))
    Core(tmp_path / "home").ensure_daemon()
    assert started == [tmp_path / "home"]  # in the daemon: nothing more
    Core(tmp_path / "other").ensure_daemon()
    assert started == [tmp_path / "home", tmp_path / "other"]


def test_the_l1_starts_its_daemon_with_its_home_on_the_command_line() -> None:
    """`running_pid` vouches for a daemon by its command line naming the home."""
    from importlib.resources import files

    script = files("nestor.images").joinpath("nested_host_init.sh").read_text()
    assert 'nestor" --home "$NESTOR_HOME" serve --channel' in script
