"""The service's typed vocabulary: what goes in and what comes out of every use case.

Sizes are bytes, states are enums, times are seconds; no prose except a human reason where
the thing itself is a reason (a balancer's decision, an unreachable level's error). Front ends
format these for people (CLI) or serialise them (API) with :func:`to_json`.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..model import VMState

__all__ = [
    "AuditEntry", "CheckResult", "ExecResult", "HostInfo", "HostPolicy", "HostReport", "HostTree", "ImageInfo",
    "MemoryChange", "MemoryOutcome", "MemoryResult", "MoveResult", "NewVM", "ProcessorResult", "SaveResult", "StopHow",
    "StopResult",
    "Tree", "TreeNode", "VMInfo", "VMSpec", "VMState", "from_json", "to_json",
]

T = TypeVar("T")


_NAMES: dict[type, tuple[str, ...]] = {}  # a dataclass's field names, once per class
_PLAIN = frozenset({str, int, float, bool, type(None)})


def to_json(value: Any) -> Any:
    """Dataclasses, enums and lists of them as plain JSON values (flat and fast for lists)."""
    if type(value) in _PLAIN:
        return value
    names = _NAMES.get(type(value))
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _NAMES[type(value)] = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        return {name: to_json(getattr(value, name)) for name in names}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def from_json(cls: type[T], data: Any) -> T:
    """The inverse of to_json for the types of this module (the client's side of the API)."""
    return typing.cast(T, _decoder(cls)(data))


Decoder = typing.Callable[[Any], Any]
_DECODERS: dict[Any, Decoder] = {}


def _same(data: Any) -> Any:
    return data


def _decoder(tp: Any) -> Decoder:
    """One decoding function per type, built once (the client decodes 1,000 VMs per list)."""
    found = _DECODERS.get(tp)
    if found is None:
        found = _DECODERS[tp] = _build(tp)
    return found


def _build(tp: Any) -> Decoder:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = _decoder(next(a for a in typing.get_args(tp) if a is not type(None)))
        if inner is _same:
            return _same
        return lambda data: None if data is None else inner(data)
    if origin in (list, tuple):
        item = _decoder((typing.get_args(tp) or (Any,))[0])
        if origin is list:
            return lambda data: [item(v) for v in data]
        return lambda data: tuple(item(v) for v in data)
    if origin is dict or tp is Any:
        return _same
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        fields: dict[str, Decoder] = {}  # filled on first use: a dataclass may contain itself (TreeNode)

        def dataclass_decoder(data: Any) -> Any:
            if not fields:
                hints = typing.get_type_hints(tp)
                fields.update({f.name: _decoder(hints[f.name]) for f in dataclasses.fields(tp)})
            return tp(**{k: fields[k](v) for k, v in data.items() if k in fields})

        return dataclass_decoder
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return typing.cast(Decoder, tp)
    if tp is bytes:
        return base64.b64decode
    return _same


# -- VMs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VMSpec:
    """`vm new`: what to create. Sizes in bytes."""

    name: str
    vcpus: int = 1
    memory: int = 512 << 20
    nested: bool = False
    image: str | None = None  # None with no kernel: the appliance
    kernel: str | None = None
    initrd: str | None = None
    append: str = ""
    run_script: str | None = None
    config_version: str | None = None  # None: the current version
    switches: tuple[str, ...] = ()  # one adapter on each
    # On a libvirt host (issue 12): kernel/initrd are files on that host; image/run_script/switches do not apply.
    host: str | None = None  # a registered libvirt host, or "auto" (placement); None: this machine
    maximum: int | None = None  # libvirt host: the memory a running VM can be given, bytes
    disk: str | None = None  # libvirt host: a disk image file on that host
    network: str | None = None  # libvirt host: a libvirt network (the MAC guard is clean-traffic)


@dataclass(frozen=True)
class VMInfo:
    """A VM as shown: its stored intent plus what was observed just now."""

    name: str
    state: VMState
    vcpus: int
    memory: int  # startup memory, bytes
    nested: bool
    config_version: str
    image: str | None
    pid: int | None = None
    uptime: float | None = None
    accelerator: str | None = None
    cpu_model: str | None = None
    hypervisor_running: bool | None = None
    hypervisor_detection: str | None = None
    dynamic_memory: bool = False
    memory_minimum: int | None = None
    memory_maximum: int | None = None
    memory_buffer: int | None = None
    memory_room: int | None = None  # QEMU's -m: what a running VM can grow to without a restart
    memory_assigned: int | None = None
    memory_demand: int | None = None
    memory_balancer: str | None = None  # the balancer's last decision (a reason), while it runs
    host: str | None = None  # the libvirt host the VM is on; None: this machine
    host_state: str | None = None  # libvirt's own word where `state` cannot say it (missing, crashed, …)
    enlightenments: str = "off"  # "hyperv": the QEMU hv-* set (policy/enlightenments.py)
    tpm: bool = False  # a virtual TPM 2.0 (swtpm)


@dataclass(frozen=True)
class NewVM:
    vm: VMInfo
    warnings: list[str] = field(default_factory=list)
    placement: str | None = None  # `host: auto`: why that host was chosen
    network: str | None = None  # the default switch made for it, and on which prefix (made on first use)


@dataclass(frozen=True)
class MoveResult:
    """`vm move`: a live migration (running VM) or a moved definition (off VM)."""

    name: str
    source: str
    dest: str
    live: bool
    disk_copied_to: str | None = None  # the disk's new path when the destination did not have it


class StopHow(enum.StrEnum):
    SHUT_DOWN = "shut down"  # the guest powered off after the ACPI power button
    TURNED_OFF = "turned off"  # --turn-off: QEMU ended at once
    TIMED_OUT = "turned off after the timeout"  # no guest shutdown within the timeout
    DISCARDED = "saved state discarded"  # --turn-off on a saved VM


@dataclass(frozen=True)
class StopResult:
    name: str
    how: StopHow
    timeout: float


@dataclass(frozen=True)
class ProcessorResult:
    vm: VMInfo
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MemoryChange:
    """`vm set-memory`: None leaves a setting as it is. Sizes in bytes, buffer in percent."""

    startup: int | None = None
    dynamic: bool | None = None
    minimum: int | None = None
    maximum: int | None = None
    buffer: int | None = None

    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in dataclasses.fields(self))


class MemoryOutcome(enum.StrEnum):
    UPDATED = "updated"  # the configuration changed (an Off VM, or a setting with no live effect)
    RESIZED = "resized"  # a running static VM's balloon reached the new size
    RESIZING = "resizing"  # the guest follows the balloon, but had not arrived when we stopped waiting


@dataclass(frozen=True)
class MemoryResult:
    name: str
    outcome: MemoryOutcome
    target: int | None = None  # bytes, for a live resize
    actual: int | None = None  # bytes the guest had when we stopped waiting


@dataclass(frozen=True)
class SaveResult:
    name: str
    path: str
    size: int  # bytes of saved state


@dataclass(frozen=True)
class ExecResult:
    code: int
    stdout: bytes
    stderr: bytes


# -- the tree ----------------------------------------------------------------------------------
@dataclass
class TreeNode:
    name: str
    level: int
    state: str
    vcpus: int
    memory: str
    nested: bool
    hypervisor_running: bool | None = None
    reachable: bool | None = None  # None: not asked (off, or not nested)
    error: str | None = None
    children: list[TreeNode] = field(default_factory=list)


@dataclass
class HostTree:
    """A libvirt host in the tree, with the VMs nestor made there."""

    host: str
    uri: str
    level: int
    reachable: bool
    error: str | None = None
    vms: list[TreeNode] = field(default_factory=list)


@dataclass
class Tree:
    host: str
    level: int
    vms: list[TreeNode]
    hosts: list[HostTree] = field(default_factory=list)  # libvirt hosts (issue 12)


# -- host and images ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    fix: str | None = None


@dataclass(frozen=True)
class HostReport:
    facts: dict[str, Any]
    checks: list[CheckResult]
    ok: bool  # the prerequisites to run VMs at all (qemu, an accelerator) pass


@dataclass(frozen=True)
class HostInfo:
    """A libvirt host: its capabilities as libvirt reports them now. Sizes in bytes."""

    name: str
    uri: str
    reachable: bool
    error: str | None = None
    nestor_vms: int = 0
    driver: str | None = None
    hostname: str | None = None
    arch: str | None = None
    cpus: int | None = None
    memory_total: int | None = None
    free_memory: int | None = None
    free_memory_source: str | None = None  # "libvirt" | "estimated: total - running VMs"
    vms: int | None = None  # every domain on the host, nestor's or not
    domain_type: str | None = None  # kvm | qemu | test
    libvirt_version: str | None = None
    virt_type: str | None = None
    vendor: str | None = None
    model: str | None = None
    cpu_modes: list[str] = field(default_factory=list)
    nesting: bool | None = None
    nesting_flag: str | None = None  # svm | vmx
    nesting_reason: str | None = None
    max_vcpus: int | None = None
    vm_names: list[str] = field(default_factory=list)  # nestor's VMs there (host show)


@dataclass(frozen=True)
class ImageInfo:
    name: str
    built: bool
    path: str



# -- host policy and the audit log -------------------------------------------------------------
@dataclass(frozen=True)
class HostPolicy:
    """The host's policy (`nestor host set`): nesting allow | block."""

    nesting: str  # allow | block
    changed: float | None = None  # when it was last set (unix time); None: never set, the default
    rule: str = "nesting-block"  # the rule id its refusals carry
    nested_vms: list[str] = field(default_factory=list)  # VMs with nesting on (they cannot start while blocked)
    running_nested: list[str] = field(default_factory=list)  # of those, the running ones (not stopped by a block)


@dataclass(frozen=True)
class AuditEntry:
    """One change of state: who (via, uid, token), what (operation, target), when, the result."""

    id: int
    time: float  # unix time
    who: str  # in words: "uid 0 (root)", "token ci", "host (channel)"
    via: str  # cli | unix | tcp | channel | api
    uid: int | None
    pid: int | None
    token: str | None
    operation: str  # e.g. vm.start, host.set-policy
    target: str | None
    result: str  # ok, or the error's kind (policy, not_found, ...)
    rule: str | None = None
    message: str | None = None


Progress = typing.Callable[[str], None]  # a long use case's progress lines (image builds, moves)


def no_progress(line: str) -> None:
    """The default Progress: lines go nowhere (the same object on every Hypervisor, so their
    signatures compare equal)."""
