"""The CLI's shape, without running anything: every command resolves, errors are one line."""

import click
import pytest

import nestor
from nestor.cli.main import COMMANDS, cli, main


def test_every_command_group_resolves() -> None:
    ctx = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name, name
    assert cli.get_command(ctx, "nope") is None


def test_public_api() -> None:
    assert sorted(nestor.__all__) == ["NestorError", "__version__"]
    assert all(hasattr(nestor, name) for name in nestor.__all__)


def test_usage_error_is_one_line_with_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["vm", "frobnicate"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and err[1].startswith("hint: ") and len(err) == 2
