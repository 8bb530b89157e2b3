"""The quickstart's levels for `--depth N`: L0 → l1 → … → lN, what each level is and needs.

Pure: numbers in, levels (or a refusal) out. Every level but the deepest is a nested host with
nesting on; the deepest is an appliance that pings L0 through every level's NAT. A nested host's
memory is its child's, plus what the lab rule counts (policy/lab.py: the child's QEMU overhead
and the nested host's own kernel and nestor), rounded up to 256 MiB and never under the 1 GiB the
depth-2 quickstart's l1 has always had.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInput, StateError
from .lab import NESTED_HOST_BASE, VM_OVERHEAD

MiB = 1 << 20
DEFAULT_DEPTH = 2
MIN_DEPTH, MAX_DEPTH = 2, 4
LEAF_MEMORY = 256 * MiB
NESTED_HOST_MIN = 1024 * MiB
ROUND = 256 * MiB
NESTED_VCPUS, LEAF_VCPUS = 2, 1
HOST_RESERVE = 512 * MiB  # what L0 keeps for itself beyond l1 and its QEMU


@dataclass(frozen=True)
class Level:
    name: str  # l1 … lN
    level: int  # 1 … N
    memory: int
    vcpus: int
    nested_host: bool  # False: the deepest level, an appliance

    @property
    def path(self) -> str:
        """Its VM path from L0: l1/l2/…/lK."""
        return "/".join(f"l{k}" for k in range(1, self.level + 1))


def levels(depth: int, first: int = 1) -> list[Level]:
    """The levels first … depth (first > 1: the part of the chain below a level, `--inside`)."""
    if not MIN_DEPTH <= depth <= MAX_DEPTH:
        raise InvalidInput(f"quickstart --depth {depth}: the depth must be {MIN_DEPTH} to {MAX_DEPTH}",
                           hint=f"nestor quickstart --depth {DEFAULT_DEPTH}")
    if not 1 <= first <= depth:
        raise InvalidInput(f"quickstart --depth {depth}: this host is at level {first - 1}, at or below that depth",
                           hint=f"give a depth above {first - 1}")
    chain = [Level(f"l{depth}", depth, LEAF_MEMORY, LEAF_VCPUS, False)]
    for k in range(depth - 1, first - 1, -1):
        need = chain[0].memory + VM_OVERHEAD + NESTED_HOST_BASE
        memory = max(NESTED_HOST_MIN, -(-need // ROUND) * ROUND)
        chain.insert(0, Level(f"l{k}", k, memory, NESTED_VCPUS, True))
    return chain


def gib(size: int) -> str:
    return f"{size / (1 << 30):.1f} GiB"


def memory_needed(chain: list[Level]) -> int:
    """What this host must have free for the chain: its first VM, its QEMU, and a reserve."""
    return chain[0].memory + VM_OVERHEAD + HOST_RESERVE


def check_memory(depth: int, chain: list[Level], available: int) -> None:
    """Refuse a depth this host's free memory cannot hold (one line, naming what is needed)."""
    need = memory_needed(chain)
    if need > available:
        deepest = max((d for d in range(MIN_DEPTH, depth) if memory_needed(levels(d, chain[0].level)) <= available),
                      default=None)
        hint = f"nestor quickstart --depth {deepest}" if deepest else "free memory on this host"
        raise StateError(f"quickstart --depth {depth} needs {gib(need)} of free memory "
                         f"({chain[0].name}: {gib(chain[0].memory)}), this host has {gib(available)}",
                         hint=hint)


def nat_subnet(level: int) -> tuple[str, str]:
    """(gateway address/prefix, prefix) of the NAT level `level` gives its child: one /24 per
    level (each level's uplink is in its parent's), 192.168.100.0/24 at l1 as always."""
    third = 100 + level - 1
    return f"192.168.{third}.1/24", f"192.168.{third}.0/24"
