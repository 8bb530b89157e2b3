"""The host's nesting policy (`nestor host set --nesting block|allow`) as a pure rule.

Incus has `restricted.virtual-machines.nesting` for the same reason: a KVM escape through nested
virtualization (2026) made hosts want to refuse nesting outright. While the host's policy is
`block`, no VM may be made with nesting on, have it turned on, or start with it; a VM that has it
is not changed (the block is a refusal, not a rewrite): turning nesting off, or allowing it
again, lets it start.
"""

from __future__ import annotations

import enum

from ..errors import PolicyError

RULE = "nesting-block"  # the rule id of its refusals (errors.PolicyError.rule)
ALLOW_HINT = "nestor host set --nesting allow"


class Nesting(enum.StrEnum):
    ALLOW = "allow"
    BLOCK = "block"


class Action(enum.StrEnum):
    NEW = "new"  # vm new with nesting on
    ENABLE = "enable"  # set-processor: nesting on
    START = "start"  # start (or resume) a VM that has nesting on


def parse(value: str) -> Nesting:
    try:
        return Nesting(value)
    except ValueError:
        from ..errors import InvalidInput

        raise InvalidInput(f"unknown nesting policy {value[:40]!r}", hint="give --nesting block or --nesting allow") from None


def check(policy: Nesting, vm: str, action: Action) -> None:
    """Refuse what `action` would do to `vm` while the host blocks nesting; nothing while it allows."""
    if policy is Nesting.ALLOW:
        return
    what = {
        Action.NEW: "a VM cannot be made with nested virtualization on",
        Action.ENABLE: "nested virtualization cannot be turned on",
        Action.START: "a VM with nested virtualization on cannot start",
    }[action]
    hint = ALLOW_HINT
    if action is Action.START:
        hint += f", or turn it off: nestor vm set-processor {vm} --expose-virtualization-extensions off"
    raise PolicyError(f"vm '{vm}': {what} while this host's policy blocks nesting (host policy nesting=block)",
                      hint=hint, rule=RULE)
