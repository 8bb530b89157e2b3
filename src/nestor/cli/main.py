"""Root command, global options and the one place errors become `error: …` lines."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import click

from .. import paths
from ..errors import NestorError
from . import host, image, net, vm
from .context import Ctx
from .quickstart import quickstart
from .tree import tree


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(path_type=Path), default=None,
              help="state directory (default: $NESTOR_HOME, /var/lib/nestor as root)")
@click.option("--netns", default=None, help="network namespace for bridges, taps, nft and QEMU")
@click.option("--debug", is_flag=True, help="show tracebacks")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, netns: str | None, debug: bool) -> None:
    """nestor: virtual machines that run their own hypervisor."""
    ctx.obj = Ctx(home=home or paths.default_home(), netns=netns, debug=debug)


cli.add_command(host.host)
cli.add_command(vm.vm)
cli.add_command(image.image)
cli.add_command(net.switch)
cli.add_command(net.nat)
cli.add_command(net.adapter)
cli.add_command(tree)
cli.add_command(quickstart)


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="nestor", standalone_mode=False)
    except NestorError as exc:
        if debug:
            traceback.print_exc()
        where = "".join(f" ({k} {v})" for k, v in exc.context.items() if v not in exc.message)
        click.echo(f"error: {exc.message}{where}", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        command = exc.ctx.command_path if isinstance(exc, click.UsageError) and exc.ctx else "nestor"
        click.echo(f"hint: {command} --help", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        os._exit(0)
