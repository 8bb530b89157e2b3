"""One Hypervisor: every action of a level, once, typed specs in and typed results out.

Three kinds of object answer it, with the same signatures (tests/unit/test_hypervisor_parity.py):
- `nestor.service.Service`: this level, in process;
- `nestor.client.Client`: any nestor API (unix socket, TCP+TLS, a nested-host VM's channel);
- what `guest(name)` returns on either: the Hypervisor of the nestor inside running VM `name`,
  one level down (a Client over the VM's channel from a Service, a Client whose requests carry
  the API's `at` parameter from a Client).

A VM anywhere in the tree is named by its path, `l1/l2/web`: the levels above it, then its own
name. `at(root, "l1/l2")` is the Hypervisor of l2's nestor; the VM is asked for there by its
last name::

    from nestor.hypervisor import at, split_path
    levels, name = split_path("l1/l2/web")
    with at(root, "/".join(levels)) as level:
        level.vm_stop(name)

Every Hypervisor is a context manager; closing the one `at` returns closes the chain it opened.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from .errors import InvalidInput, NestorError, NotFound
from .service.guest_types import (
    CheckpointInfo,
    CheckpointResult,
    DiskInfo,
    DiskResize,
    GuestSpec,
    StoredImageInfo,
    VMAddress,
)
from .service.net_types import (
    AdapterInfo,
    AdapterSpec,
    GuardChange,
    NatInfo,
    NatSpec,
    SwitchDetail,
    SwitchInfo,
    SwitchRemoval,
    SwitchSpec,
)
from .service.types import (
    AuditEntry,
    ExecResult,
    HostInfo,
    HostPolicy,
    HostReport,
    ImageInfo,
    MemoryChange,
    MemoryResult,
    MoveResult,
    NewVM,
    ProcessorResult,
    Progress,
    SaveResult,
    StopResult,
    Tree,
    VMInfo,
    VMSpec,
    no_progress,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .images.debian import DebianRequest
    from .lab.types import (
        LabDown,
        LabInfo,
        LabInventory,
        LabPlan,
        LabRestored,
        LabSaved,
        LabStatus,
        LabUp,
        LevelReport,
    )

__all__ = ["Hypervisor", "Progress", "at", "level_error", "no_progress", "split_levels", "split_path"]

EXEC_TIMEOUT = 120.0  # service/guests.py's EXEC_TIMEOUT and TREE_TIMEOUT (the same defaults everywhere)
TREE_TIMEOUT = 30.0


class Hypervisor(Protocol):
    """The actions of one level. The API's routes map onto these (api/handlers.py: each route's
    `does`), and what has no route of its own is in NO_ROUTE below."""

    # -- this level --
    def host_check(self) -> HostReport: ...
    def tree(self, timeout: float = TREE_TIMEOUT) -> Tree: ...
    def host_check_tree(self, path: str = "", timeout: float = TREE_TIMEOUT) -> dict[str, Any]: ...
    def bugreport(self, path: str = "", timeout: float = TREE_TIMEOUT) -> dict[str, Any]: ...
    def host_policy(self) -> HostPolicy: ...
    def host_set_policy(self, nesting: str | None = None) -> HostPolicy: ...
    def audit_list(self, since: str | None = None, limit: int = 1000) -> list[AuditEntry]: ...
    def guest(self, name: str) -> Hypervisor: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None: ...

    # -- VMs --
    def vm_list(self) -> list[VMInfo]: ...
    def vm_show(self, name: str) -> VMInfo: ...
    def vm_new(self, spec: VMSpec) -> NewVM: ...
    def vm_new_guest(self, name: str, guest: GuestSpec, vcpus: int = 1, memory: int = 512 << 20,
                     nested: bool = False, config_version: str | None = None) -> NewVM: ...
    def vm_new_request(self, spec: VMSpec, guest: GuestSpec) -> NewVM: ...
    def vm_start(self, name: str) -> VMInfo: ...
    def vm_stop(self, name: str, turn_off: bool = False, timeout: float = 30.0) -> StopResult: ...
    def vm_remove(self, name: str, force: bool = False) -> None: ...
    def vm_save(self, name: str) -> SaveResult: ...
    def vm_set_processor(self, name: str, count: int | None = None, nested: bool | None = None,
                         enlightenments: str | None = None) -> ProcessorResult: ...
    def vm_set_memory(self, name: str, change: MemoryChange) -> MemoryResult: ...
    def vm_set_tpm(self, name: str, on: bool, delete_state: bool = False) -> VMInfo: ...
    def vm_upgrade(self, name: str) -> VMInfo: ...
    def vm_move(self, name: str, host: str, progress: Progress = no_progress) -> MoveResult: ...
    def vm_exec(self, target: str, argv: list[str], timeout: float = EXEC_TIMEOUT) -> ExecResult: ...
    def vm_log(self, name: str, follow: bool = False, until: str | None = None, timeout: float | None = None,
               tail: int | None = None) -> Iterator[bytes]: ...
    def vm_address(self, vm: str) -> VMAddress: ...

    # -- libvirt hosts --
    def host_add(self, name: str, uri: str) -> HostInfo: ...
    def host_list(self) -> list[HostInfo]: ...
    def host_show(self, name: str) -> HostInfo: ...
    def host_remove(self, name: str) -> None: ...

    # -- disks and checkpoints of disk-image VMs --
    def vm_disk_add(self, vm: str, name: str, size: int) -> DiskInfo: ...
    def vm_disk_list(self, vm: str) -> list[DiskInfo]: ...
    def vm_disk_resize(self, vm: str, name: str, size: int) -> DiskResize: ...
    def vm_disk_remove(self, vm: str, name: str) -> None: ...
    def vm_checkpoint_new(self, vm: str, name: str) -> CheckpointResult: ...
    def vm_checkpoint_list(self, vm: str) -> list[CheckpointInfo]: ...
    def vm_checkpoint_apply(self, vm: str, name: str) -> CheckpointResult: ...
    def vm_checkpoint_remove(self, vm: str, name: str) -> None: ...

    # -- network --
    def switch_new(self, spec: SwitchSpec) -> SwitchInfo: ...
    def switch_list(self) -> list[SwitchInfo]: ...
    def switch_show(self, name: str) -> SwitchDetail: ...
    def switch_set_ip(self, name: str, address: str) -> SwitchInfo: ...
    def switch_remove(self, name: str, force: bool = False) -> SwitchRemoval: ...
    def adapter_add(self, vm: str, spec: AdapterSpec) -> AdapterInfo: ...
    def adapter_list(self, vm: str) -> list[AdapterInfo]: ...
    def adapter_set(self, vm: str, name: str | None, change: GuardChange) -> AdapterInfo: ...
    def adapter_remove(self, vm: str, name: str) -> None: ...
    def nat_new(self, spec: NatSpec) -> NatInfo: ...
    def nat_list(self) -> list[NatInfo]: ...
    def nat_show(self, name: str) -> NatInfo: ...
    def nat_remove(self, name: str) -> None: ...

    # -- images --
    def image_list(self) -> list[ImageInfo]: ...
    def image_build(self, image: str, progress: Progress, force: bool = False) -> ImageInfo: ...
    def image_build_debian(self, request: DebianRequest, progress: Progress, force: bool = False) -> StoredImageInfo: ...
    def image_import(self, file: Path, name: str | None, progress: Progress, fmt: str | None = None,
                     force: bool = False) -> StoredImageInfo: ...
    def image_store_list(self) -> list[StoredImageInfo]: ...
    def image_remove(self, name: str) -> None: ...

    # -- labs (a lab file travels as its text: an API caller names no file of the server's) --
    def level_report(self) -> LevelReport: ...
    def lab_plan(self, text: str, source: str | None = None) -> LabPlan: ...
    def lab_up(self, text: str, progress: Progress = no_progress, source: str | None = None) -> LabUp: ...
    def lab_list(self) -> list[LabInfo]: ...
    def lab_status(self, name: str) -> LabStatus: ...
    def lab_inventory(self, name: str) -> LabInventory: ...
    def lab_down(self, name: str, progress: Progress = no_progress) -> LabDown: ...
    def lab_save(self, name: str, progress: Progress = no_progress) -> LabSaved: ...
    def lab_restore(self, name: str, progress: Progress = no_progress) -> LabRestored: ...


# The protocol's methods no route of their own answers, and why (the parity test holds every
# other method to exactly one route, and every route to one method).
NO_ROUTE = {
    "guest": "a level below is the `at` query parameter of every route",
    "close": "the handle's own", "__enter__": "the handle's own", "__exit__": "the handle's own",
    "vm_new": "POST /vms (vm_new_request takes every kind of VM)",
    "vm_new_guest": "POST /vms (vm_new_request takes every kind of VM)",
}


# -- paths ---------------------------------------------------------------------------------------
def split_levels(path: str) -> list[str]:
    """'l1/l2' → ['l1', 'l2']; '' → [] (this level). Each name is a VM name."""
    from .model import validate_name

    if path == "":
        return []
    parts = path.split("/")
    if any(part == "" for part in parts):
        raise InvalidInput(f"'{path}' is not a VM path", hint="a path is VM names joined by '/', e.g. l1/l2")
    for part in parts:
        validate_name(part)
    return parts


def split_path(path: str) -> tuple[list[str], str]:
    """'l1/l2/web' → (['l1', 'l2'], 'web'): the levels above the VM, and its own name."""
    parts = split_levels(path)
    if not parts:
        raise InvalidInput("no VM path given", hint="a VM name, or a path such as l1/l2")
    return parts[:-1], parts[-1]


def at(hv: Hypervisor, path: str) -> Hypervisor:
    """The Hypervisor at `path` below `hv`: at(root, 'l1/l2') is root.guest('l1').guest('l2'),
    and closing it closes the chain; at(root, '') is root itself (closing that is the caller's)."""
    levels = split_levels(path)
    if not levels:
        return hv
    opened: list[Hypervisor] = []
    try:
        for depth, name in enumerate(levels):
            try:
                hv = hv.guest(name)
            except NestorError as exc:
                raise level_error("/".join(levels[:depth + 1]), "/".join(levels[:depth]), exc) from exc
            opened.append(hv)
    except BaseException:
        for level in reversed(opened):
            level.close()
        raise
    if len(opened) > 1:
        from .client import Client

        if isinstance(hv, Client):
            hv.close_also(opened[:-1])
    return hv


def level_error(path: str, level: str, exc: NestorError) -> NestorError:
    """`exc`, raised by the level `level` ('' is this one) about the VM at `path`, reworded to
    name both: `vm 'l1/l9': no VM 'l9' in l1`. Other errors that name the VM by its last name
    name it by its path (`vm 'l1/l2': …`)."""
    name = path.rpartition("/")[2]
    if not level or path == name:
        return exc
    if isinstance(exc, NotFound) and exc.message == f"vm '{name}' not found":
        err: NestorError = NotFound(f"vm '{path}': no VM '{name}' in {level}",
                                    hint=f"nestor vm list --at {level} shows the VMs there")
    elif exc.message.startswith(f"vm '{name}'"):
        err = type(exc)(f"vm '{path}'" + exc.message.removeprefix(f"vm '{name}'"), exc.hint, exc.rule)
    else:
        return exc
    err.context.update(exc.context)
    return err
