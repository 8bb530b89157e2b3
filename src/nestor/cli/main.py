"""Root command, global options and the one place errors become `error: …` lines."""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import click

from .. import paths
from ..errors import InvalidInput, NestorError
from ..escape import error_lines, one_line
from ..model import validate_netns
from .context import Ctx

# Each command group is imported only when it runs: `vm list` should not pay for the network,
# image or quickstart code (under TCG in an L1, every import costs).
COMMANDS = {
    "host": "host:host",
    "vm": "vm:vm",
    "image": "image:image",
    "switch": "net:switch",
    "nat": "net:nat",
    "adapter": "net:adapter",
    "tree": "tree:tree",
    "quickstart": "quickstart:quickstart",
    "serve": "serve:serve",
    "token": "serve:token",
    "remote": "remote:remote",
    "ps": "ps:ps",
    "audit": "audit:audit",
    "bugreport": "bugreport:bugreport",
    "lab": "lab:lab",
    "events": "events:events",
}
# Commands that only make sense on this host: --remote with them is an error, not silently ignored.
LOCAL_ONLY = {"serve", "token", "remote", "quickstart", "ps", "bugreport", "lab", "events"}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attr = COMMANDS[cmd_name].split(":")
        command: click.Command = getattr(importlib.import_module(f"{__package__}.{module}"), attr)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", default=None,
              help="state directory (default: $NESTOR_HOME, /var/lib/nestor as root)")
@click.option("--netns", default=None, help="network namespace for bridges, taps, nft and QEMU")
@click.option("--debug", is_flag=True, help="show tracebacks")
@click.option("--remote", default=None, metavar="NAME",
              help="run the command on a remote host (nestor remote add): vm, tree, host check")
@click.pass_context
def cli(ctx: click.Context, home: str | None, netns: str | None, debug: bool, remote: str | None) -> None:
    """nestor: virtual machines that run their own hypervisor."""
    if remote is not None and ctx.invoked_subcommand in LOCAL_ONLY:
        raise InvalidInput(f"'{ctx.invoked_subcommand}' runs on this host only: drop --remote",
                           hint=f"nestor {ctx.invoked_subcommand} --help")
    root = paths.check_home(paths.default_home() if home is None else home)
    ctx.obj = Ctx(home=root, netns=None if netns is None else validate_netns(netns), debug=debug, remote=remote)


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="nestor", standalone_mode=False)
    except NestorError as exc:
        if debug:
            traceback.print_exc()
        for line in error_lines(exc):
            click.echo(line, err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        click.echo("hint: nothing was changed", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"error: {one_line(exc.format_message())}", err=True)
        command = exc.ctx.command_path if isinstance(exc, click.UsageError) and exc.ctx else "nestor"
        click.echo(f"hint: {command} --help", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        os._exit(0)
    except Exception as exc:  # a bug: still one line for the user, the traceback with --debug
        if debug:
            traceback.print_exc()
        click.echo(f"error: internal error: {type(exc).__name__}: {one_line(str(exc))}", err=True)
        click.echo("hint: run again with --debug for the traceback, and report it", err=True)
        sys.exit(70)
