"""Rendering for people (rich tables) and programs (-o json).

Text that reaches a terminal may come from a guest (a VM's console, an exec's output, a tree's
error, a DHCP hostname), and a guest must not drive L0's terminal: `escape_controls` is the one
rule, used by every front end that prints. What people read (tables, trees, errors, `nestor ps`)
is always escaped; a guest's own bytes (`vm log`, `vm exec`) are escaped only on a TTY
(GuestOutput), so a pipe gets them exactly.
"""

from __future__ import annotations

import codecs
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import click

from ..escape import escape_controls as escape_controls  # re-exported: the CLI imports it from here

OUTPUT = click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
                      help="output format")


def emit_json(data: Any) -> None:
    # Indented for a person at a terminal; compact (the C encoder, ~5x faster) for programs.
    indent = 2 if sys.stdout.isatty() else None
    click.echo(json.dumps(data, indent=indent, default=str))


def rows_out(rows: Sequence[dict[str, Any]], output: str, columns: Sequence[str], empty: str = "none") -> None:
    """A list command's output: every field as JSON, or the given columns as a table."""
    if output == "json":
        emit_json(list(rows))
    else:
        table(rows, columns, empty)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], empty: str = "none") -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if not rows:
        click.echo(empty)
        return
    out = Table(box=None, pad_edge=False)
    for column in columns:
        out.add_column(column.upper().replace("_", " "))
    for row in rows:
        # Text, not str: a cell is data, never rich markup (a path holding "[/]" must print as is).
        out.add_row(*(Text(_cell(row.get(column))) for column in columns))
    Console(file=sys.stdout, soft_wrap=True).print(out)


def fields(data: dict[str, Any]) -> None:
    width = max(len(k) for k in data) + 1
    for key, value in data.items():
        click.echo(f"{(key.replace('_', ' ') + ':').ljust(width + 1)} {_cell(value)}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    # Stored values may predate validation or come from a guest: never send a terminal escape.
    return escape_controls(str(value), keep="")


class GuestOutput:
    """A guest's bytes to `stream` (sys.stdout or sys.stderr): exactly as they came when the stream
    is not a terminal; on a terminal decoded as UTF-8 (a stray byte shown as `\\xNN`) and passed
    through escape_controls. Chunks may split a character or a CR LF: both are carried over."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._decoder = codecs.getincrementaldecoder("utf-8")("backslashreplace")
        self._pending = ""

    def write(self, data: bytes, final: bool = False) -> None:
        if not self.tty:
            self.stream.buffer.write(data)
        else:
            text = self._pending + self._decoder.decode(data, final)
            self._pending = ""
            if text.endswith("\r") and not final:
                text, self._pending = text[:-1], "\r"
            encoding = self.stream.encoding or "utf-8"
            self.stream.buffer.write(escape_controls(text).encode(encoding, "backslashreplace"))
        self.stream.flush()

    def close(self) -> None:
        self.write(b"", final=True)


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def progress(message: str) -> None:
    click.echo(f"… {message}", err=True)
