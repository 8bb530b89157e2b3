"""A live migration's flags and parameters, and its progress text. Pure.

nestor drives a *managed* migration: it holds connections to both hosts and calls
``virDomainMigrate3`` on the source, so it works from any machine that reaches both (libvirt's
``migrate`` with live and persistent flags, issue 12).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The values of libvirt's virDomainMigrateFlags (libvirt-domain.h); the binding exports the
# same names, and tests/unit/test_remote.py checks that they agree.
VIR_MIGRATE_LIVE = 1 << 0
VIR_MIGRATE_PERSIST_DEST = 1 << 3
VIR_MIGRATE_UNDEFINE_SOURCE = 1 << 4
VIR_MIGRATE_OFFLINE = 1 << 10

PARAM_DEST_NAME = "destination_name"  # VIR_MIGRATE_PARAM_DEST_NAME


@dataclass(frozen=True)
class MigrationPlan:
    flags: int
    params: dict[str, Any]
    live: bool


def plan(name: str, running: bool) -> MigrationPlan:
    """Live for a running VM; an off VM moves only its definition (offline migration)."""
    flags = VIR_MIGRATE_PERSIST_DEST | VIR_MIGRATE_UNDEFINE_SOURCE
    flags |= VIR_MIGRATE_LIVE if running else VIR_MIGRATE_OFFLINE
    return MigrationPlan(flags, {PARAM_DEST_NAME: name}, running)


def flag_names(flags: int) -> list[str]:
    names = {VIR_MIGRATE_LIVE: "live", VIR_MIGRATE_PERSIST_DEST: "persist-dest",
             VIR_MIGRATE_UNDEFINE_SOURCE: "undefine-source", VIR_MIGRATE_OFFLINE: "offline"}
    return [label for bit, label in names.items() if flags & bit]


def progress_text(stats: dict[str, Any]) -> str | None:
    """One line from virDomainGetJobStats: how much memory is sent, at what rate."""
    total = stats.get("memory_total") or stats.get("data_total")
    if not total:
        return None
    done = stats.get("memory_processed", stats.get("data_processed", 0))
    line = f"migrating: {done >> 20}/{total >> 20} MiB ({100 * done // total}%)"
    if stats.get("memory_bps"):
        line += f", {stats['memory_bps'] >> 20} MiB/s"
    if stats.get("memory_dirty_rate"):
        line += f", {stats['memory_dirty_rate']} dirty pages/s"
    return line
