"""A live migration's flags and parameters, and its progress text. Pure.

nestor drives a *managed* migration: it holds connections to both hosts and calls
``virDomainMigrate3`` on the source, so it works from any machine that reaches both (libvirt's
``migrate`` with live and persistent flags, issue 12).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# The values of libvirt's virDomainMigrateFlags (libvirt-domain.h); the binding exports the
# same names, and tests/unit/test_remote.py checks that they agree.
VIR_MIGRATE_LIVE = 1 << 0
VIR_MIGRATE_PERSIST_DEST = 1 << 3
VIR_MIGRATE_UNDEFINE_SOURCE = 1 << 4
VIR_MIGRATE_NON_SHARED_DISK = 1 << 6  # copy the whole disk to the destination (NBD, while the VM runs)
VIR_MIGRATE_OFFLINE = 1 << 10
VIR_MIGRATE_TLS = 1 << 16  # QEMU's migration stream (RAM and the NBD disk copy) over TLS

PARAM_DEST_NAME = "destination_name"  # VIR_MIGRATE_PARAM_DEST_NAME
PARAM_DEST_XML = "destination_xml"  # VIR_MIGRATE_PARAM_DEST_XML: the domain as the destination runs it
PARAM_PERSIST_XML = "persistent_xml"  # VIR_MIGRATE_PARAM_PERSIST_XML: its definition there
PARAM_MIGRATE_DISKS = "migrate_disks"  # VIR_MIGRATE_PARAM_MIGRATE_DISKS: which disks to copy


@dataclass(frozen=True)
class MigrationPlan:
    flags: int
    params: dict[str, Any]
    live: bool
    transport: str = "local"  # how RAM and disk travel: "local", "tls", or "unencrypted" (see `transport`)


_LOCAL_SCHEMES = ("test", "qemu")  # in-process, or this machine's own libvirtd (qemu:///system)


def transport(source_uri: str | None, dest_uri: str | None) -> tuple[int, str]:
    """The flags that protect a live migration's stream between these hosts, and what it is. Pure.

    Between two qemu+tls:// hosts (each has TLS certificates for libvirt, the same PKI QEMU's
    migration TLS uses): VIR_MIGRATE_TLS. Between a host and itself or in-process test hosts:
    nothing leaves the machine. Otherwise (qemu+ssh://, qemu+tcp://) libvirt's TLS migration needs
    certificates nestor cannot assume, and tunnelling (VIR_MIGRATE_TUNNELLED) needs a peer-to-peer
    migration in which the source's libvirtd itself reaches the destination, and cannot copy disks:
    the stream goes unencrypted, and `vm move` says so."""
    schemes = {urlsplit(uri or "").scheme for uri in (source_uri, dest_uri)}
    if schemes <= set(_LOCAL_SCHEMES):
        return 0, "local"
    if schemes == {"qemu+tls"}:
        return VIR_MIGRATE_TLS, "tls"
    return 0, "unencrypted"


def transport_note(plan: MigrationPlan) -> str | None:
    """The line `vm move` prints about its stream, when it is not encrypted across a network."""
    if plan.transport == "unencrypted" and plan.live:
        return ("warning: RAM and disk cross the network unencrypted (TLS migration needs qemu+tls:// URIs on both "
                "hosts, with libvirt's TLS certificates; see docs/security.md)")
    return None


@dataclass(frozen=True)
class StorageCopy:
    """A disk the destination does not have: copied into a volume nestor made there first.

    libvirt copies a running VM's disks with VIR_MIGRATE_NON_SHARED_DISK (QEMU's NBD server on the
    destination, drive-mirror on the source), but only into a disk that already exists there."""

    target: str  # the disk's device (vda)
    source_path: str
    dest_path: str  # the pre-created volume on the destination
    dest_xml: str  # the running domain's migratable XML with the disk at dest_path


def plan(name: str, running: bool, copy: StorageCopy | None = None, source_uri: str | None = None,
         dest_uri: str | None = None) -> MigrationPlan:
    """Live for a running VM; an off VM moves only its definition (offline migration).

    With `copy` (running VMs only), the disk is copied while the VM runs and the destination
    runs and keeps the domain with the disk at its new path."""
    flags = VIR_MIGRATE_PERSIST_DEST | VIR_MIGRATE_UNDEFINE_SOURCE
    flags |= VIR_MIGRATE_LIVE if running else VIR_MIGRATE_OFFLINE
    params: dict[str, Any] = {PARAM_DEST_NAME: name}
    if copy is not None:
        if not running:
            raise ValueError("libvirt copies storage only in a live migration")
        flags |= VIR_MIGRATE_NON_SHARED_DISK
        params.update({PARAM_DEST_XML: copy.dest_xml, PARAM_PERSIST_XML: copy.dest_xml,
                       PARAM_MIGRATE_DISKS: [copy.target]})
    secure, how = transport(source_uri, dest_uri)
    if running:
        flags |= secure
    return MigrationPlan(flags, params, running, how)


def flag_names(flags: int) -> list[str]:
    names = {VIR_MIGRATE_LIVE: "live", VIR_MIGRATE_PERSIST_DEST: "persist-dest",
             VIR_MIGRATE_UNDEFINE_SOURCE: "undefine-source", VIR_MIGRATE_OFFLINE: "offline",
             VIR_MIGRATE_NON_SHARED_DISK: "copy-storage", VIR_MIGRATE_TLS: "tls"}
    return [label for bit, label in names.items() if flags & bit]


def progress_text(stats: dict[str, Any]) -> str | None:
    """One line from virDomainGetJobStats: the disk copied so far (first phase of a copy-storage
    move), else how much memory is sent, at what rate."""
    disk_total = stats.get("disk_total")
    disk_done = stats.get("disk_processed", 0)
    if disk_total and disk_done < disk_total and not stats.get("memory_processed"):
        line = f"copying storage: {disk_done >> 20}/{disk_total >> 20} MiB ({100 * disk_done // disk_total}%)"
        if stats.get("disk_bps"):
            line += f", {stats['disk_bps'] >> 20} MiB/s"
        return line
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
