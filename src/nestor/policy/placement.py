"""Where a new VM goes among the libvirt hosts. Pure: host summaries in, a choice and reasons out.

The rule (issue 12): among the hosts that can take the VM, the one with the most free memory;
when nesting is asked, only hosts that can offer it. When none can, the error names every host
and why it was passed over.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import NotFound, PolicyError
from ..model import format_size


@dataclass(frozen=True)
class Candidate:
    name: str
    reachable: bool
    free_memory: int  # bytes
    nesting: bool
    nesting_reason: str = ""
    error: str = ""  # why it is unreachable


@dataclass(frozen=True)
class Placement:
    host: str
    reason: str
    passed_over: tuple[tuple[str, str], ...] = ()


def why_not(candidate: Candidate, memory: int, nested: bool) -> str | None:
    """Why this host cannot take the VM, or None if it can."""
    if not candidate.reachable:
        return f"unreachable ({candidate.error})" if candidate.error else "unreachable"
    if nested and not candidate.nesting:
        return f"cannot offer nesting ({candidate.nesting_reason})" if candidate.nesting_reason else "cannot offer nesting"
    if candidate.free_memory < memory:
        return f"only {format_size(candidate.free_memory // (1 << 20) << 20)} free, the VM needs {format_size(memory)}"
    return None


def place(candidates: list[Candidate], memory: int, nested: bool) -> Placement:
    """The host with the most free memory that can take the VM (ties: the first name)."""
    if not candidates:
        raise NotFound("no libvirt hosts are registered", hint="nestor host add NAME URI")
    passed: list[tuple[str, str]] = []
    best: Candidate | None = None
    for candidate in sorted(candidates, key=lambda c: c.name):
        reason = why_not(candidate, memory, nested)
        if reason is not None:
            passed.append((candidate.name, reason))
        elif best is None or candidate.free_memory > best.free_memory:
            best = candidate
    if best is None:
        shown = "; ".join(f"{name}: {reason}" for name, reason in passed[:5])
        more = f"; and {len(passed) - 5} more" if len(passed) > 5 else ""
        what = "a nested-enabled VM" if nested else "the VM"
        raise PolicyError(f"no host can take {what} ({format_size(memory)}): {shown}{more}",
                          hint="nestor host list shows each host's nesting and free memory")
    wanted = "can offer nesting and has" if nested else "has"
    return Placement(best.name, f"{wanted} the most free memory ({format_size(best.free_memory // (1 << 20) << 20)})",
                     tuple(passed))
