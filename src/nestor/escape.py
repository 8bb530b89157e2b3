"""Text for a terminal, and how an error reads there: importable without click or the service
(the CLI's `vm start` through a warm daemon, nestor/warm_start.py, prints with it too)."""

from __future__ import annotations

from .errors import NestorError


def escape_controls(text: str, keep: str = "\n\t") -> str:
    """`text` safe for a terminal: every character that is not printable (C0 and C1 controls such
    as ESC and CSI, DEL, bidi overrides and other format characters) shown as its Python escape
    (`\\x1b`, `\\u202e`), except those in `keep`. A CR before LF is dropped (the terminal shows the
    same); a lone CR, which would let a line overwrite what came before it, is escaped."""
    if text.isprintable():
        return text
    if "\n" in keep:
        text = text.replace("\r\n", "\n")
    return "".join(ch if ch.isprintable() or ch in keep else ch.encode("unicode_escape").decode() for ch in text)


def one_line(text: str) -> str:
    """An error is one line whatever it quotes: control characters (a newline in a name, a
    terminal escape) are shown escaped, never sent to the terminal."""
    return escape_controls(text, keep="")


def error_lines(exc: NestorError) -> list[str]:
    """`error: …` (with the resources it names that its message does not) and `hint: …`."""
    where = "".join(f" ({k} {v})" for k, v in exc.context.items() if v not in exc.message)
    lines = [f"error: {one_line(exc.message + where)}"]
    if exc.hint:
        lines.append(f"hint: {one_line(exc.hint)}")
    return lines
