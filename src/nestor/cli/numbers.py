"""Strict numbers for the CLI: ASCII digits only, as sizes already are.

Python's int() and float() take any Unicode decimal digit ('４', '٤', '१'), and click's INT and
FLOAT types call them, so `--vcpus ４` was 4. These types accept what a person types on any
keyboard layout in ASCII, and nothing a confusable glyph can hide.
"""

from __future__ import annotations

import re
from typing import Any

import click

_INT = re.compile(r"[+-]?[0-9]{1,18}")
_FLOAT = re.compile(r"[+-]?([0-9]{1,15}(\.[0-9]{0,15})?|\.[0-9]{1,15})")


class StrictInt(click.ParamType):  # type: ignore[type-arg]
    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        text = str(value)
        if not _INT.fullmatch(text):
            self.fail(f"{text!r} is not an integer (ASCII digits 0-9, at most 18 of them)", param, ctx)
        return int(text)


class StrictFloat(click.ParamType):  # type: ignore[type-arg]
    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float | int) and not isinstance(value, bool):
            return float(value)
        text = str(value)
        if not _FLOAT.fullmatch(text):
            self.fail(f"{text!r} is not a number (ASCII digits 0-9 and one '.', e.g. 30 or 2.5)", param, ctx)
        return float(text)


INT = StrictInt()
FLOAT = StrictFloat()


def parse_int(text: str) -> int | None:
    """`text` as a strict ASCII integer, or None."""
    return int(text) if _INT.fullmatch(text) else None
