"""Statements → pipelines → typed commands, checked completely before anything runs.

A script is a list of statements; a statement is a pipeline of commands; a command is a cmdlet
name and its arguments, *bound* to the cmdlet's :class:`Signature` the way PowerShell binds them:
parameter names are case-insensitive and may be shortened to an unambiguous prefix or given by
an alias, ``-Name:value`` is accepted, values without a name fill the positional parameters in
order, and every value is converted to its parameter's type here (``$true``, ``1`` or ``0`` for a
Boolean; ``512MB`` for a size; ``On``/``Off``; an IPv4 address …). A parameter the pipeline can
fill may be left out of any command after the first ``|``.

A mistake anywhere in a script is an :class:`~nestor.errors.InvalidInput` raised before the first
command runs, so a bad script changes nothing.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ..errors import InvalidInput
from ..model import validate_name
from .tokenize import Kind, Token, tokenize

VALUE_KINDS = (Kind.WORD, Kind.STRING, Kind.VARIABLE)
MAX_SCRIPT = 1 << 20  # characters: a script is planned whole before anything runs
MAX_STATEMENTS = 10_000
_NUMBER_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(kb|mb|gb|tb|pb)?$", re.IGNORECASE)
_MULTIPLIERS = {"": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40, "pb": 1 << 50}

Convert = Callable[[Token, str], Any]  # (value token, "Cmdlet -Param") -> typed value


# -- value types ---------------------------------------------------------------------------------
def _text(token: Token, what: str) -> str:
    if token.kind is Kind.VARIABLE:
        raise InvalidInput(f"{what} expects a value, not {token.text} ({token.where})",
                           hint=f"write the value itself after {what.split()[-1]}")
    return token.text


def text(token: Token, what: str) -> str:
    value = _text(token, what)
    if not value:
        raise InvalidInput(f"{what} is empty ({token.where})", hint="give a value")
    return value


def boolean(token: Token, what: str) -> bool:
    """PowerShell's rule for [bool] parameters: $true, $false, or a number (0 is false)."""
    if token.kind is Kind.VARIABLE and token.value is not None:
        return bool(token.value)
    if token.kind is Kind.WORD and _NUMBER_RE.match(token.text):
        return size(token, what) != 0
    raise InvalidInput(f"{what} accepts only Boolean values and numbers, such as $true, $false, 1 or 0, "
                       f"not '{token.text}' ({token.where})", hint=f"e.g. {what.split()[-1]} $true")


def size(token: Token, what: str) -> int:
    """A PowerShell number with an optional multiplier: 512MB, 2GB, 1.5GB, 1073741824."""
    match = _NUMBER_RE.match(_text(token, what).strip())
    if not match:
        raise InvalidInput(f"{what} expects a number such as 512MB or 2GB, not '{token.text}' ({token.where})",
                           hint="PowerShell size literals: KB, MB, GB, TB (powers of 1024)")
    digits = match.group(1)
    if len(digits) > 40:  # float() of 400 digits is inf, and int(inf) an OverflowError
        raise InvalidInput(f"{what}: '{token.text[:60]}…' is too large a number ({token.where})", hint="e.g. 512MB")
    number = Fraction(digits) * _MULTIPLIERS[(match.group(2) or "").lower()]  # exact: no float rounding
    if number.denominator != 1:
        raise InvalidInput(f"{what} must be a whole number of bytes, not '{token.text}' ({token.where})",
                           hint="e.g. 512MB")
    if number >= 1 << 63:
        raise InvalidInput(f"{what}: '{token.text}' is too large a number ({token.where})", hint="e.g. 512MB")
    return int(number)


def integer(token: Token, what: str) -> int:
    return size(token, what)


def switch_value(token: Token, what: str) -> bool:
    """A switch parameter's value, only with the colon form: -Force:$false."""
    return boolean(token, what)


def choice(*choices: str) -> Convert:
    def convert(token: Token, what: str) -> str:
        value = _text(token, what)
        for option in choices:
            if value.lower() == option.lower():
                return option
        raise InvalidInput(f"{what} does not accept '{value}' ({token.where})",
                           hint=f"use one of: {', '.join(choices)}")
    return convert


def nestor_name(kind: str) -> Convert:
    """A name for nestor: PowerShell compares names case-insensitively, nestor's are lower case."""
    def convert(token: Token, what: str) -> str:
        return validate_name(text(token, what).lower(), kind)
    return convert


def name_pattern(token: Token, what: str) -> str:
    """A name that may hold PowerShell wildcards (* ? [..]), folded to lower case."""
    return text(token, what).lower()


LOCAL_COMPUTERS = ("localhost", ".")


def computer_name(token: Token, what: str) -> str:
    """Hyper-V's -ComputerName as a level: a VM path below this host ('l1', 'l1/l2'), or '' for
    this host itself ('localhost', '.'). Folded to lower case like every name."""
    from ..errors import NestorError
    from ..hypervisor import split_levels

    value = text(token, what).lower()
    if value in LOCAL_COMPUTERS:
        return ""
    try:
        return "/".join(split_levels(value))
    except NestorError as exc:
        raise InvalidInput(f"{what}: '{token.text}' is not a VM path of this host ({exc.message}) ({token.where})",
                           hint="a nested host by its VM path: -ComputerName l1, -ComputerName l1/l2; "
                                "localhost for this host") from None


def ipv4(token: Token, what: str) -> ipaddress.IPv4Address:
    value = text(token, what)
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise InvalidInput(f"{what} expects an IPv4 address, not '{value}' ({token.where})",
                           hint="e.g. 192.168.100.1") from None


def ipv4_prefix(token: Token, what: str) -> ipaddress.IPv4Network:
    value = text(token, what)
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise InvalidInput(f"{what} expects an IPv4 prefix such as 192.168.100.0/24, not '{value}' "
                           f"({token.where}): {exc}", hint="e.g. 192.168.100.0/24") from None


def prefix_length(token: Token, what: str) -> int:
    value = integer(token, what)
    if not 0 <= value <= 32:
        raise InvalidInput(f"{what} must be 0 to 32 for IPv4, not {value} ({token.where})", hint="e.g. 24")
    return value


# -- signatures ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    name: str
    convert: Convert | None  # None: a switch parameter (-Force)
    aliases: tuple[str, ...] = ()
    position: int | None = None
    required: bool = False
    pipeline: bool = False  # the pipeline's objects can fill it
    yields: bool = False  # a prefix it shares with the cmdlet's own parameters is theirs (-c: -Count)

    @property
    def is_switch(self) -> bool:
        return self.convert is None


@dataclass(frozen=True)
class Signature:
    name: str
    params: tuple[Param, ...]
    native: str  # the nestor command that does the same (for hints and the mapping table)
    unsupported: dict[str, str] = field(default_factory=dict)  # known parameters we refuse: name -> hint
    raw: Callable[[list[Token]], Any] | None = None  # native commands (netsh): check raw words

    def param(self, typed: str, token: Token) -> Param:
        key = typed.lower()
        for p in self.params:
            if key == p.name.lower() or key in (a.lower() for a in p.aliases):
                return p
        for known, hint in self.unsupported.items():
            if key == known.lower():
                raise InvalidInput(f"{self.name}: parameter -{known} is not supported ({token.where}); "
                                   f"the nestor command: {self.command}", hint=hint)
        matches = [p for p in self.params
                   if any(n.lower().startswith(key) for n in (p.name, *p.aliases))]
        if len(matches) > 1:  # a parameter every cmdlet has (-ComputerName) never makes an old prefix ambiguous
            matches = [p for p in matches if not p.yields] or matches
        if len(matches) == 1:
            return matches[0]
        if matches:
            names = ", ".join(f"-{p.name}" for p in matches)
            raise InvalidInput(f"{self.name}: parameter -{typed} is ambiguous: {names} ({token.where})",
                               hint="write more of the name")
        accepted = " ".join(f"-{p.name}" for p in self.params)
        raise InvalidInput(f"{self.name}: parameter -{typed} is not supported ({token.where}); "
                           f"the nestor command: {self.command}",
                           hint=f"{self.name} accepts {accepted or 'no parameters'}; or: {self.native}")

    @property
    def command(self) -> str:
        """The native command without its arguments: 'nestor vm set-processor'."""
        words = []
        for word in self.native.split():
            if not word.islower() or word.startswith(("-", "[", "(")):
                break
            words.append(word)
        return " ".join(words) or self.native


@dataclass(frozen=True)
class Command:
    """One bound command of a pipeline: its signature and typed arguments by parameter name."""

    signature: Signature
    args: dict[str, Any]
    token: Token  # the command name (for positions in messages)
    raw: Any = None  # native commands: what the signature's raw checker returned

    @property
    def name(self) -> str:
        return self.signature.name

    def get(self, param: str, default: Any = None) -> Any:
        return self.args.get(param, default)


@dataclass(frozen=True)
class Statement:
    commands: tuple[Command, ...]
    line: int
    text: str  # the statement as written (for messages)


Lookup = Callable[[Token], Signature]


# -- parsing -------------------------------------------------------------------------------------
def parse(script: str, lookup: Lookup) -> list[Statement]:
    """Tokenize and bind a whole script; raises before anything runs."""
    if len(script) > MAX_SCRIPT:
        raise InvalidInput(f"the script is {len(script)} characters long, more than nestor ps runs ({MAX_SCRIPT})",
                           hint="split it into smaller scripts")
    lines = script.splitlines()
    statements = []
    found = _statements(tokenize(script))
    if len(found) > MAX_STATEMENTS:
        raise InvalidInput(f"the script has {len(found)} statements, more than nestor ps runs in one go ({MAX_STATEMENTS})",
                           hint="split it into smaller scripts")
    for segments in found:
        commands = tuple(_bind(tokens, lookup, in_pipeline=i > 0) for i, tokens in enumerate(segments))
        line = segments[0][0].line
        statements.append(Statement(commands, line, lines[line - 1].strip() if line <= len(lines) else ""))
    return statements


def _statements(tokens: Sequence[Token]) -> list[list[list[Token]]]:
    """Split into statements (on ';' and newlines) and each into pipeline segments (on '|').

    A newline right after a '|' continues the pipeline, as in PowerShell.
    """
    out: list[list[list[Token]]] = []
    segments: list[list[Token]] = [[]]
    after_pipe = False
    for token in tokens:
        if token.kind is Kind.END:
            if after_pipe and token.text != ";" and token.text != "":
                continue
            if after_pipe:
                raise InvalidInput(f"an empty pipe element is not allowed ({token.where})",
                                   hint="put a command after '|'")
            if segments != [[]]:
                out.append(segments)
            segments = [[]]
        elif token.kind is Kind.PIPE:
            if not segments[-1]:
                raise InvalidInput(f"an empty pipe element is not allowed ({token.where})",
                                   hint="put a command before '|'")
            segments.append([])
            after_pipe = True
        else:
            segments[-1].append(token)
            after_pipe = False
    return out


def _bind(tokens: list[Token], lookup: Lookup, in_pipeline: bool) -> Command:
    head, rest = tokens[0], tokens[1:]
    if head.kind is not Kind.WORD:
        raise InvalidInput(f"a command must start with a cmdlet name, not '{head.text}' ({head.where})",
                           hint="e.g. Get-VM")
    sig = lookup(head)
    if sig.raw is not None:
        return Command(sig, {}, head, raw=sig.raw(rest))
    args: dict[str, Any] = {}
    positional = sorted((p for p in sig.params if p.position is not None), key=lambda p: p.position or 0)
    i = 0
    while i < len(rest):
        token = rest[i]
        if token.kind is Kind.PARAM:
            param = sig.param(token.text, token)
            if param.name in args:
                raise InvalidInput(f"{sig.name}: parameter -{param.name} is given twice ({token.where})",
                                   hint="give each parameter once")
            what = f"{sig.name} -{param.name}"
            nxt = rest[i + 1] if i + 1 < len(rest) else None
            if param.is_switch and not token.colon:
                args[param.name] = True
                i += 1
                continue
            if nxt is None or nxt.kind not in VALUE_KINDS:
                raise InvalidInput(f"{sig.name}: missing an argument for parameter -{param.name} ({token.where})",
                                   hint=f"give a value after -{param.name}")
            args[param.name] = switch_value(nxt, what) if param.convert is None else param.convert(nxt, what)
            i += 2
            continue
        if token.kind not in VALUE_KINDS:  # pragma: no cover - the splitter leaves only these
            raise InvalidInput(f"unexpected '{token.text}' ({token.where})", hint="check the command")
        free = next((p for p in positional if p.name not in args), None)
        if free is None or free.convert is None:
            raise InvalidInput(f"{sig.name}: no parameter accepts the value '{token.text}' ({token.where})",
                               hint=f"name the parameter it is for (e.g. -Name); or use {sig.native}")
        args[free.name] = free.convert(token, f"{sig.name} -{free.name}")
        i += 1
    for param in sig.params:
        if param.required and param.name not in args and not (in_pipeline and param.pipeline):
            raise InvalidInput(f"{sig.name}: parameter -{param.name} is required ({head.where})",
                               hint=f"e.g. {sig.name} -{param.name} VALUE")
    return Command(sig, args, head)
