"""The tokenizer for the PowerShell subset `nestor ps` accepts.

What PowerShell's own tokenizer does, for the part of the language the seed uses:

- words (cmdlet names, bare values such as ``On``, ``512MB``, ``address=1.1.1.1``);
- parameters ``-Name``, also written with an en dash, em dash or horizontal bar (``–Name``),
  as PowerShell accepts them, and ``-Name:value``;
- ``$true``, ``$false`` and ``$null`` (no other variables);
- quoted strings: ``'…'`` and the typographic ``‘…’`` are literal (a doubled quote is one quote),
  ``"…"`` and ``“…”``/``„…”`` expand backtick escapes; any opening quote of a kind is closed by
  any closing quote of the same kind, as in PowerShell;
- ``|`` between commands, ``;`` and newlines between statements, ``#`` comments, and a backtick
  at the end of a line continuing it.

Anything else the language has (script blocks, subexpressions, redirection, arrays, variables)
is refused with a :class:`~nestor.errors.InvalidInput` naming the line and column.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import InvalidInput

DASHES = "-\u2013\u2014\u2015"  # hyphen-minus, en dash, em dash, horizontal bar
SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
DOUBLE_QUOTES = '"\u201c\u201d\u201e'
QUOTES = SINGLE_QUOTES + DOUBLE_QUOTES
SPACE = " \t\f\v\u00a0\ufeff"
NEWLINES = "\r\n"
ENDS_WORD = SPACE + NEWLINES + "|;"
VARIABLES = {"true": True, "false": False, "null": None}
# What a bare word may not contain unquoted, with the reason shown to the user.
UNSUPPORTED = {
    "{": "script blocks", "}": "script blocks", "(": "subexpressions", ")": "subexpressions",
    "@": "arrays and splatting", ",": "arrays (give one value)", ">": "redirection",
    "&": "the call operator and '&&'",
}
BACKTICK_ESCAPES = {"0": "\0", "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


class Kind(enum.Enum):
    WORD = "word"  # a bare word: a command name or a value
    STRING = "string"  # a quoted string (or a word with a quoted part): always a value
    PARAM = "param"  # -Name (text holds the name, without the dash)
    VARIABLE = "variable"  # $true / $false / $null (value holds the Python value)
    PIPE = "pipe"
    END = "end"  # a statement separator: ';' or a newline


@dataclass(frozen=True)
class Token:
    kind: Kind
    text: str
    line: int
    column: int
    value: bool | None = None  # VARIABLE only
    colon: bool = False  # PARAM written as -Name:value (the value follows without a space)

    @property
    def where(self) -> str:
        return f"line {self.line}, column {self.column}"


def _error(message: str, line: int, column: int, hint: str) -> InvalidInput:
    return InvalidInput(f"{message} (line {line}, column {column})", hint=hint)


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.line_start = 0

    @property
    def column(self) -> int:
        return self.pos - self.line_start + 1

    def peek(self, ahead: int = 0) -> str:
        i = self.pos + ahead
        return self.text[i] if i < len(self.text) else ""

    def at(self, chars: str) -> bool:
        """Is the next character one of these (never true at the end)?"""
        ch = self.peek()
        return bool(ch) and ch in chars

    def advance(self) -> str:
        ch = self.text[self.pos]
        self.pos += 1
        if ch == "\n":
            self.line += 1
            self.line_start = self.pos
        return ch

    def newline_follows(self) -> bool:
        """At a backtick: only spaces after it up to the end of the line (a line continuation)?"""
        i = self.pos + 1
        while i < len(self.text) and self.text[i] in SPACE:
            i += 1
        return i >= len(self.text) or self.text[i] in NEWLINES


def tokenize(text: str) -> list[Token]:
    """Split a script into tokens; the last token is always END."""
    s = _Scanner(text)
    tokens: list[Token] = []
    while s.pos < len(s.text):
        ch = s.peek()
        line, column = s.line, s.column
        if ch in SPACE:
            s.advance()
        elif ch in NEWLINES or ch == ";":
            s.advance()
            tokens.append(Token(Kind.END, ch, line, column))
        elif ch == "#":
            while s.pos < len(s.text) and not s.at(NEWLINES):
                s.advance()
        elif ch == "`" and s.newline_follows():
            s.advance()
            while s.at(SPACE):
                s.advance()
            if s.peek() == "\r":
                s.advance()
            if s.peek() == "\n":
                s.advance()
        elif ch == "|":
            s.advance()
            if s.peek() == "|":
                raise _error("'||' is not supported", line, column, "write one statement per line")
            tokens.append(Token(Kind.PIPE, "|", line, column))
        elif ch == "$":
            tokens.append(_variable(s))
        elif ch in DASHES and (s.peek(1).isalpha() or s.peek(1) == "_"):
            tokens.append(_parameter(s))
        else:
            tokens.append(_word(s))
    tokens.append(Token(Kind.END, "", s.line, s.column))
    return tokens


def _variable(s: _Scanner) -> Token:
    line, column = s.line, s.column
    s.advance()
    name = ""
    while s.peek().isalnum() or s.at("_"):
        name += s.advance()
    if name.lower() in VARIABLES:
        if s.peek() and not s.at(ENDS_WORD):
            raise _error(f"unexpected '{s.peek()}' after ${name}", s.line, s.column, "put a space after the value")
        return Token(Kind.VARIABLE, f"${name}", line, column, value=VARIABLES[name.lower()])
    shown = f"${name}" if name else "$"
    raise _error(f"variables are not supported: {shown}", line, column,
                 "write the value itself; nestor ps knows only $true, $false and $null")


def _parameter(s: _Scanner) -> Token:
    line, column = s.line, s.column
    s.advance()  # the dash, of whichever kind
    name = ""
    while s.peek().isalnum() or s.at("_-?"):
        name += s.advance()
    colon = False
    if s.peek() == ":":
        s.advance()
        colon = True
    elif s.peek() and not s.at(ENDS_WORD):
        raise _error(f"unexpected '{s.peek()}' in parameter -{name}", s.line, s.column,
                     "parameters look like -Name VALUE or -Name:VALUE")
    return Token(Kind.PARAM, name, line, column, colon=colon)


def _word(s: _Scanner) -> Token:
    """A bare word, possibly with quoted parts (``address="1.1.1.1"`` is one argument)."""
    line, column = s.line, s.column
    parts: list[str] = []
    quoted = False
    while s.pos < len(s.text) and not s.at(ENDS_WORD):
        ch = s.peek()
        if ch in QUOTES:
            parts.append(_quoted(s))
            quoted = True
        elif ch == "`":
            s.advance()
            if not s.peek():
                raise _error("a backtick at the end of the script", s.line, s.column, "remove it")
            parts.append(s.advance())
        elif ch == "$":
            raise _error("variables are not supported inside a word", s.line, s.column,
                         "write the value itself, or quote it with single quotes")
        elif ch in UNSUPPORTED:
            raise _error(f"'{ch}' is not supported: {UNSUPPORTED[ch]}", s.line, s.column,
                         "nestor ps accepts commands with plain values; quote a value that contains it")
        elif ch == "<":
            raise _placeholder(s)
        else:
            parts.append(s.advance())
    return Token(Kind.STRING if quoted else Kind.WORD, "".join(parts), line, column)


def _placeholder(s: _Scanner) -> InvalidInput:
    line, column = s.line, s.column
    rest = s.text[s.pos:]
    end = rest.find(">")
    if 0 < end < 60 and "\n" not in rest[:end]:
        placeholder = rest[: end + 1]
        return _error(f"placeholder '{placeholder}' is not filled in", line, column,
                      f"replace {placeholder} with the real value")
    return _error("'<' is not supported: redirection", line, column, "quote a value that contains it")


def _quoted(s: _Scanner) -> str:
    line, column = s.line, s.column
    opening = s.advance()
    single = opening in SINGLE_QUOTES
    kind = SINGLE_QUOTES if single else DOUBLE_QUOTES
    out: list[str] = []
    while True:
        if s.pos >= len(s.text):
            raise _error(f"the string starting with {opening} is missing its closing quote", line, column,
                         "close it with a matching quote")
        ch = s.advance()
        if ch in kind:
            if s.at(kind):  # a doubled quote stands for one
                out.append(s.advance())
                continue
            return "".join(out)
        if not single and ch == "`":
            if not s.peek():
                continue
            nxt = s.advance()
            out.append(BACKTICK_ESCAPES.get(nxt, nxt))
        elif not single and ch == "$" and (s.peek().isalnum() or s.at("_{(")):
            raise _error("variables and subexpressions in double-quoted strings are not supported",
                         s.line, s.column - 1, "use single quotes, or write the value itself")
        else:
            out.append(ch)
