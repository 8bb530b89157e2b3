"""Rendering for people (rich tables) and programs (-o json)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

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
    text = str(value)
    # Stored values may predate validation or come from a guest: never send a terminal escape.
    return text if text.isprintable() else "".join(ch if ch.isprintable() else "?" for ch in text)


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def progress(message: str) -> None:
    click.echo(f"… {message}", err=True)
