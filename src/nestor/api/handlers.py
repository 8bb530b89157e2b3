"""The API's resources: one table (api/table.py) of handlers over the service facade.

Each handler: take its typed arguments, call the facade, answer to_json(result). Standard library
only (besides nestor): FastAPI serves this table (api/routes.py) and so does the plain dispatcher
of an L1's channel (table.dispatch), with the same handlers. Handlers are plain `def`: FastAPI
runs them in its thread pool, and each opens its own Service. Long work (start, stop, save, image
builds) is an operation (202 + its URL; api/runtime.py). Streams (events, the serial console)
are FastAPI's alone (api/routes.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import files
from ..errors import Forbidden, InvalidInput
from ..policy.nesting import Nesting
from ..service import audit
from ..service.guest_types import (
    CheckpointInfo,
    DiskInfo,
    DiskResize,
    GuestSpec,
    StoredImageInfo,
    VMAddress,
)
from ..service.net_types import (
    AdapterInfo,
    AdapterSpec,
    GuardChange,
    NatInfo,
    NatSpec,
    SwitchDetail,
    SwitchInfo,
    SwitchRemoval,
    SwitchSpec,
    SwitchType,
)
from ..service.types import (
    AuditEntry,
    ExecResult,
    HostInfo,
    HostPolicy,
    HostReport,
    ImageInfo,
    MemoryChange,
    MemoryResult,
    NewVM,
    ProcessorResult,
    Tree,
    VMInfo,
    VMSpec,
    to_json,
)
from . import rules
from .runtime import RING_PAGE
from .table import RUNTIME, UPLOADS, Answer, Body, Ctx, Query, Table, described, empty, json_answer


class Operation:
    """Documents an operation's answer (202): api/routes.py puts its pydantic model OperationOut here."""


OPERATION = Operation


class RecentEvents:
    """Documents the ring of recent events (GET /v1/events/recent): api/routes.py puts its model
    RecentEventsOut here."""


def _doc(model: Any, status: int = 200) -> dict[int | str, dict[str, Any]]:
    """Document a route's answer with the service's own type, without validating it again per request
    (listing 1,000 VMs should not pay pydantic for data the service typed already)."""
    return {status: {"model": model, "description": "success"}}


table = Table()


# -- request bodies (FastAPI gets pydantic models of them, extra fields forbidden) ----------------
_GUEST_FLAGS = rules.both(rules.kept("iso", "disk_size", "user", "ssh_key", "hostname", "cloud_init"),
                          rules.kept("secure_boot", "no_ssh_key", "tpm", default=False),
                          rules.among("generation", [1], default=1))
_LIBVIRT_FIELDS = rules.kept("host", "maximum", "disk", "network")
_APPLIANCE = rules.both(  # the appliance, the nested host or a kernel, on this machine (service/vms.new)
    _LIBVIRT_FIELDS, _GUEST_FLAGS, rules.among("image", [None, *rules.BUILT_IN]),
    rules.either(rules.kept("kernel"), rules.kept("image")),  # --image and --kernel exclude each other
    rules.either(rules.kept("initrd"), rules.given("kernel")))  # --initrd needs --kernel
_ON_LIBVIRT = rules.both(  # a VM on a libvirt host (remote/hosts.py)
    rules.given("host"), _GUEST_FLAGS, rules.kept("image", "run_script", "config_version"),
    rules.kept("switches", default=[]))
_DISK_IMAGE = rules.both(  # a disk-image VM (service/diskvms.validate_request)
    _LIBVIRT_FIELDS, rules.kept("kernel", "initrd", "run_script"), rules.kept("append", default=""),
    rules.either(rules.given("image"), rules.given("iso")),
    rules.either(rules.kept("secure_boot", default=False), rules.among("generation", [2], default=1)),
    rules.either(rules.kept("cloud_init"), rules.kept("user", "ssh_key")),
    rules.either(rules.kept("ssh_key"), rules.kept("no_ssh_key", default=False)),
    rules.either(rules.given("image"), rules.kept("user", "ssh_key", "hostname", "cloud_init")))


class VMNew(Body):
    """One of three kinds: the appliance, the nested host or a kernel (image appliance or nested-host,
    or kernel); a VM on a libvirt host (host, maximum, disk, network); a disk-image VM (a stored
    image or iso, and the cloud-init fields). no_network and switches exclude each other."""

    combined = (rules.either(_APPLIANCE, _ON_LIBVIRT, _DISK_IMAGE),
                rules.either(rules.kept("no_network", default=False), rules.kept("switches", default=[])))
    name: str = described(pattern=rules.NAME)
    vcpus: int = described(1, "vCPUs (at most what the accelerator allows: 409 above it)", ge=1, le=rules.MAX_VCPUS)
    memory: int = described(512 << 20, "bytes, whole MiB (at most what the host has: 409 above it)",
                            ge=rules.MIN_MEMORY, le=rules.MAX_MEMORY, multiple_of=rules.MiB)
    nested: bool = False
    image: str | None = described(None, "appliance, nested-host, or an image of GET /images/store", pattern=rules.NAME)
    kernel: str | None = described(None, "a kernel file in the server's files directory", pattern=rules.FILE)
    initrd: str | None = described(None, "an initrd file in the server's files directory", pattern=rules.FILE)
    append: str = described("", "more kernel command line (printable ASCII)", pattern=rules.TEXT)
    run_script: str | None = described(None, "a script file in the server's files directory", pattern=rules.FILE)
    config_version: str | None = described(None, "the configuration version", pattern=rules.CONFIG_VERSION)
    switches: list[str] = described(factory=list, max_items=rules.MAX_ITEMS, items={"pattern": rules.NAME})
    host: str | None = described(None, "a libvirt host, or 'auto' (placement); none: this machine", pattern=rules.NAME)
    maximum: int | None = described(None, "libvirt host: bytes a running VM can be given",
                                    ge=rules.MIN_MEMORY, le=rules.MAX_MEMORY, multiple_of=rules.MiB)
    disk: str | None = described(None, "libvirt host: a disk image file on that host", pattern=rules.FILE)
    network: str | None = described(None, "libvirt host: a libvirt network", pattern=rules.NAME)
    generation: int = described(1, "disk-image VMs: 1 = BIOS (SeaBIOS), 2 = UEFI (OVMF), as in Hyper-V", ge=1, le=2)
    secure_boot: bool = described(False, "generation 2: UEFI secure boot")
    iso: str | None = described(None, "disk-image VMs: installer media (a file in the server's files directory)",
                                pattern=rules.FILE)
    disk_size: int | None = described(None, "disk-image VMs: grow the root disk to this many bytes",
                                      ge=rules.MIN_DISK, le=rules.MAX_DISK)
    user: str | None = described(None, "cloud-init: the user to create (default: debian)", pattern=rules.USER)
    ssh_key: str | None = described(None, "cloud-init: a public key file in the server's files directory",
                                    pattern=rules.FILE)
    no_ssh_key: bool = described(False, "cloud-init: do not add the server user's default public key")
    hostname: str | None = described(None, "cloud-init: the guest's hostname", pattern=rules.HOSTNAME)
    cloud_init: str | None = described(None, "cloud-init: a user-data file in the server's files directory",
                                       pattern=rules.FILE)
    no_network: bool = described(False, "no adapter; without it and without switches a disk-image VM gets one "
                                        "on the default switch (made on first use)")
    tpm: bool = described(False, "disk-image VMs: a virtual TPM 2.0 (swtpm)")


class PolicyChange(Body):
    """What is not given stays as it is; something must be given."""

    combined = (rules.some("nesting"),)

    nesting: Nesting | None = described(None, "block: no VM may have nesting turned on or start with it; allow")


class HostNew(Body):
    name: str = described(pattern=rules.NAME)
    uri: str = described(description="a libvirt URI: " + rules.URI_EXAMPLES, max_length=4096, pattern=rules.URI)


class Move(Body):
    host: str = described(pattern=rules.NAME)


class Stop(Body):
    turn_off: bool = False
    timeout: float = described(30.0, "seconds", ge=rules.MIN_TIMEOUT, le=rules.MAX_TIMEOUT)


class Processor(Body):
    """What is not given stays as it is; something must be given."""

    combined = (rules.some("count", "nested", "enlightenments"),)
    count: int | None = described(None, "vCPUs", ge=1, le=rules.MAX_VCPUS)
    nested: bool | None = None
    enlightenments: str | None = described(None, "hyperv: the QEMU hv-* set Windows and Hyper-V use; off",
                                           enum=rules.ENLIGHTENMENTS)


class Tpm(Body):
    on: bool = described(description="true: a virtual TPM 2.0 (swtpm) from the next start; false: none")
    delete_state: bool = described(False, "with on=false: delete the TPM's state (its keys) too; "
                                          "otherwise it is kept for when the TPM is turned on again")


class Memory(Body):
    startup: int | None = described(None, "bytes, whole MiB", ge=rules.MIN_MEMORY, le=rules.MAX_MEMORY,
                                    multiple_of=rules.MiB)
    dynamic: bool | None = None
    minimum: int | None = described(None, "bytes, whole MiB", ge=rules.MIN_MEMORY, le=rules.MAX_MEMORY,
                                    multiple_of=rules.MiB)
    maximum: int | None = described(None, "bytes, whole MiB", ge=rules.MIN_MEMORY, le=rules.MAX_MEMORY,
                                    multiple_of=rules.MiB)
    buffer: int | None = described(None, "percent", ge=rules.BUFFER[0], le=rules.BUFFER[1])


class Exec(Body):
    argv: list[str] = described(description="the command and its arguments", min_items=1, max_items=rules.MAX_ITEMS)
    timeout: float = described(120.0, "seconds", ge=rules.MIN_TIMEOUT, le=rules.MAX_TIMEOUT)
    stdin_b64: str | None = described(None, "standard input, base64", pattern=rules.BASE64)


class ImageBuild(Body):
    force: bool = False


class DebianBuild(Body):
    force: bool = False
    release: str | None = described(None, "debian: the Debian release (default: bookworm)", enum=rules.RELEASES)
    packages: list[str] = described(factory=list, description="debian: more packages", max_items=rules.MAX_ITEMS,
                                    items={"pattern": rules.PACKAGE})
    size: int | None = described(None, "debian: the disk's size in bytes (default: 8 GiB)",
                                 ge=rules.MIN_DEBIAN, le=rules.MAX_DEBIAN)
    image_name: str | None = described(None, "debian: the image's name (default: debian-RELEASE)", pattern=rules.NAME)


class ImageImport(Body):
    path: str = described(description="a qcow2 or raw image file in the server's files directory (absolute path)",
                          pattern=rules.FILE)
    name: str | None = described(None, "the image's name (default: from the file name)", pattern=rules.NAME)
    format: str | None = described(None, "qcow2 or raw (none: qemu-img's probe, which must find qcow2; a raw disk is named raw)",
                                   enum=["qcow2", "raw"])
    force: bool = described(False, "import even if the virtual size exceeds the image store's free space")


class DiskNew(Body):
    name: str = described(pattern=rules.NAME)
    size: int = described(description="bytes", ge=rules.MIN_DISK, le=rules.MAX_DISK)


class DiskSize(Body):
    size: int = described(description="bytes; disks only grow", ge=rules.MIN_DISK, le=rules.MAX_DISK)


class CheckpointNew(Body):
    name: str = described(pattern=rules.NAME)


class SwitchNew(Body):
    """An external switch needs an uplink; the others take neither uplink nor move_addresses."""

    combined = (rules.either(rules.both(rules.among("type", ["external"]), rules.given("uplink")),
                             rules.both(rules.among("type", ["internal", "private"]), rules.kept("uplink"),
                                        rules.kept("move_addresses", default=False))),)
    name: str = described(pattern=rules.NAME)
    type: SwitchType
    uplink: str | None = described(None, "external: the interface to enslave", pattern=rules.IFNAME)
    move_addresses: bool = described(False, "external: move the uplink's addresses and routes onto the switch")


class SwitchAddress(Body):
    address: str = described(description="ADDR/PREFIX, e.g. 192.168.100.1/24", pattern=rules.CIDR)


class AdapterNew(Body):
    switch: str = described(pattern=rules.NAME)
    mac: str | None = described(None, "e.g. 02:00:00:00:00:01 (none: one is made)", pattern=rules.MAC)
    name: str | None = described(None, "the adapter's name (none: one is made)", pattern=rules.NAME)


class AdapterSet(Body):
    """What is not given stays as it is; something must be given."""

    combined = (rules.some("mac_spoofing", "router_guard", "dhcp_guard"),)

    mac_spoofing: bool | None = None
    router_guard: bool | None = None
    dhcp_guard: bool | None = None


class NatNew(Body):
    """On this machine's switch or on a libvirt host: exactly one of switch and host."""

    combined = (rules.either(rules.both(rules.given("switch"), rules.kept("host")),
                             rules.both(rules.given("host"), rules.kept("switch"))),)
    name: str = described(pattern=rules.NAME)
    prefix: str = described(description="CIDR, e.g. 192.168.100.0/24", pattern=rules.NAT_PREFIX)
    switch: str | None = described(None, "this machine's internal switch with an address in the prefix", pattern=rules.NAME)
    host: str | None = described(None, "or a libvirt host: a libvirt NAT network there", pattern=rules.NAME)
    dhcp: bool = described(False, "serve DHCP and DNS on the switch (dnsmasq)")


def _json(result: Any, status: int = 200) -> Answer:
    """A service result as JSON, straight: FastAPI's jsonable_encoder would walk every value again
    (250 ms for a list of 1,000 VMs on a loaded 2-core machine; json.dumps takes 10 ms)."""
    return json_answer(to_json(result), status)


# -- host ----------------------------------------------------------------------------------------
@table.get("/host", does="host_check", responses=_doc(HostReport))
def host(ctx: Ctx) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.host_check())


@table.get("/host/policy", does="host_policy", responses=_doc(HostPolicy))
def host_policy(ctx: Ctx) -> Answer:
    """The host's policy (nesting allow | block) and the VMs with nesting on."""
    with ctx.settings.service() as s:
        return _json(s.host_policy())


@table.patch("/host/policy", does="host_set_policy", responses=_doc(HostPolicy))
def host_set_policy(ctx: Ctx, body: PolicyChange) -> Answer:
    """Set the host's policy; a block refuses (kind policy, rule nesting-block) nesting on and
    starting a VM that has it, and stops no running VM."""
    with ctx.settings.service() as s:
        return _json(s.host_set_policy(None if body.nesting is None else body.nesting.value))


@table.get("/audit", does="audit_list", responses=_doc(list[AuditEntry]),
           query={"since": (str | None, Query(None, pattern=rules.SINCE)), "limit": (int, Query(1000, ge=1, le=100_000))})
def audit_list(ctx: Ctx, since: str | None = None, limit: int = 1000) -> Answer:
    """The audit log, oldest first: every change of state (who, what, when, result), not reads.
    `since`: a unix time, a duration back from now (30m, 2h, 7d) or an ISO 8601 time."""
    with ctx.settings.service() as s:
        return _json(s.audit_list(since, limit))


_REPORT_QUERY = {"path": (str | None, Query(None, pattern=rules.LEVEL, max_length=4096)),
                  "timeout": (float, Query(30.0, gt=0, le=86400))}


@table.get("/host/check-tree", does="host_check_tree", responses=_doc(dict[str, Any]), query=_REPORT_QUERY)
def host_check_tree(ctx: Ctx, path: str | None = None, timeout: float = 30.0) -> Answer:
    """`host check` of this level and of every level below (below `path`, a VM path, if given)."""
    with ctx.settings.service() as s:
        return _json(s.host_check_tree(path or "", timeout=timeout))


@table.get("/host/bugreport", does="bugreport", responses=_doc(dict[str, Any]), query=_REPORT_QUERY)
def bugreport(ctx: Ctx, path: str | None = None, timeout: float = 30.0) -> Answer:
    """Versions, host check, CPU flags, kvm parameters, kernel log and VM logs of every level
    below (no tokens, keys or cloud-init user data)."""
    with ctx.settings.service() as s:
        return _json(s.bugreport(path or "", timeout=timeout))


# -- libvirt hosts (issue 12) ---------------------------------------------------------------------
@table.get("/hosts", does="host_list", responses=_doc(list[HostInfo]))
def host_list(ctx: Ctx) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.host_list())


@table.post("/hosts", does="host_add", status_code=201, responses=_doc(HostInfo, 201))
def host_add(ctx: Ctx, body: HostNew) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.host_add(body.name, body.uri), 201)


@table.get("/hosts/{name}", does="host_show", responses=_doc(HostInfo))
def host_show(ctx: Ctx, name: str) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.host_show(name))


@table.delete("/hosts/{name}", does="host_remove", status_code=204)
def host_remove(ctx: Ctx, name: str) -> Answer:
    with ctx.settings.service() as s:
        s.host_remove(name)
    return empty()


@table.post("/vms/{name}/move", does="vm_move", status_code=202, responses=_doc(OPERATION, 202))
def vm_move(ctx: Ctx, name: str, body: Move) -> Answer:
    _known(ctx, name)
    return ctx.runtime.operations.submit(
        f"move vm '{name}' to host '{body.host}'", lambda s, op: s.vm_move(name, body.host, op.progress), vm=name,
        kind="vm.move")


# -- VMs -----------------------------------------------------------------------------------------
@table.get("/vms", does="vm_list", responses=_doc(list[VMInfo]))
def vm_list(ctx: Ctx) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.vm_list())


_GUEST_FIELDS = ("generation", "secure_boot", "iso", "disk_size", "user", "ssh_key", "no_ssh_key", "hostname",
                 "cloud_init", "no_network", "tpm")


def _path(value: str | None) -> Path | None:
    """A file named in a request: a path on the server's host (no NUL: the OS cannot name it)."""
    if value and "\x00" in value:
        raise InvalidInput("a file path contains a NUL character", hint="give the file's path on the server's host")
    return Path(value) if value else None


def api_file(ctx: Ctx, value: str | None, field: str) -> Path | None:
    """A file an API caller names, which the daemon (root) will open: only an absolute path inside
    the server's files directory (HOME/uploads, or `nestor serve --files DIR`), links resolved, so
    that a token holder cannot make root read /etc/shadow into a guest. The CLI, which runs as its
    user, may name any file that user can read (docs/security.md)."""
    path = _path(value)
    if path is None:
        return None
    top, shown = ctx.settings.files_dir, (value or "")[:200]
    hint = f"put the file into {top} on the server's host and name it there (nestor serve --files DIR sets the directory)"
    if not path.is_absolute():
        raise InvalidInput(f"{field} '{shown}' is not an absolute path", hint=hint)
    inside_home = files.within(path, ctx.settings.home) and not files.within(path, ctx.settings.home / UPLOADS)
    if not files.within(path, top) or inside_home:  # nestor's own files (the database, disks) never
        # 403: a well-formed request for a file this caller may not name (the document cannot say
        # which directory a server was given; a path there that does not exist is a 404)
        raise Forbidden(f"{field} '{shown}' is outside the files directory {top}: "
                           "an API caller may name only files in it", hint=hint)
    return path


def _api_str(ctx: Ctx, value: str | None, field: str) -> str | None:
    path = api_file(ctx, value, field)
    return None if path is None else value


@table.post("/vms", does="vm_new_request", status_code=201, responses=_doc(NewVM, 201))
def vm_new(ctx: Ctx, body: VMNew) -> Answer:
    """A VM: the appliance, the nested host or a kernel, a VM on a libvirt host, or a disk-image VM
    (an image of GET /images/store, or installer media), with its cloud-init fields."""
    fields = body.as_dict()
    guest_fields = {k: fields.pop(k) for k in _GUEST_FIELDS}
    fields["run_script"] = _api_str(ctx, body.run_script, "run_script")
    if body.host is None:  # on a libvirt host, kernel and initrd are that host's files (libvirt opens them there)
        fields["kernel"] = _api_str(ctx, body.kernel, "kernel")
        fields["initrd"] = _api_str(ctx, body.initrd, "initrd")
    spec = VMSpec(**{**fields, "switches": tuple(body.switches)})
    guest = GuestSpec(generation=guest_fields["generation"], secure_boot=guest_fields["secure_boot"],
                      iso=api_file(ctx, guest_fields["iso"], "iso"), disk_size=guest_fields["disk_size"],
                      user=guest_fields["user"], ssh_key=api_file(ctx, guest_fields["ssh_key"], "ssh_key"),
                      no_ssh_key=guest_fields["no_ssh_key"], hostname=guest_fields["hostname"],
                      cloud_init=api_file(ctx, guest_fields["cloud_init"], "cloud_init"),
                      no_network=guest_fields["no_network"], tpm=guest_fields["tpm"])
    with ctx.settings.service() as s:
        result = s.vm_new_request(spec, guest)
    ctx.runtime.events.publish("vm", {"vm": spec.name, "action": "created"})
    return _json(result, 201)


@table.get("/vms/{name}", does="vm_show", responses=_doc(VMInfo))
def vm_show(ctx: Ctx, name: str) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.vm_show(name))


@table.delete("/vms/{name}", does="vm_remove", status_code=204, query={"force": (bool, Query(False))})
def vm_remove(ctx: Ctx, name: str, force: bool = False) -> Answer:
    with ctx.settings.service() as s:
        s.vm_remove(name, force=force)
    ctx.runtime.events.publish("vm", {"vm": name, "action": "removed"})
    return empty()


def _known(ctx: Ctx, name: str) -> None:
    """404 (or 400) now rather than an operation that fails at once (a VM here or on a libvirt host)."""
    with ctx.settings.service() as s:
        s.vm_show(name)


@table.post("/vms/{name}/start", does="vm_start", status_code=202, responses=_doc(OPERATION, 202))
def vm_start(ctx: Ctx, name: str) -> Answer:
    if not audit.cli_request():
        # The CLI's own `vm start` (nestor/warm_start.py) gets its refusal from the audited use
        # case, as in-process: an unknown VM is an audit row and a failed operation, not a 404.
        _known(ctx, name)
    return ctx.runtime.operations.submit(f"start vm '{name}'", lambda s, op: s.vm_start(name), vm=name, kind="vm.start")


@table.post("/vms/{name}/stop", does="vm_stop", status_code=202, responses=_doc(OPERATION, 202))
def vm_stop(ctx: Ctx, name: str, body: Stop | None = None) -> Answer:
    stop = body or Stop()
    _known(ctx, name)
    return ctx.runtime.operations.submit(
        f"stop vm '{name}'", lambda s, op: s.vm_stop(name, turn_off=stop.turn_off, timeout=stop.timeout), vm=name,
        kind="vm.stop")


@table.post("/vms/{name}/save", does="vm_save", status_code=202, responses=_doc(OPERATION, 202))
def vm_save(ctx: Ctx, name: str) -> Answer:
    _known(ctx, name)
    return ctx.runtime.operations.submit(f"save vm '{name}'", lambda s, op: s.vm_save(name), vm=name, kind="vm.save")


@table.patch("/vms/{name}/processor", does="vm_set_processor", responses=_doc(ProcessorResult))
def vm_processor(ctx: Ctx, name: str, body: Processor) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.vm_set_processor(name, count=body.count, nested=body.nested,
                                           enlightenments=body.enlightenments))


@table.patch("/vms/{name}/tpm", does="vm_set_tpm", responses=_doc(VMInfo))
def vm_tpm(ctx: Ctx, name: str, body: Tpm) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.vm_set_tpm(name, body.on, delete_state=body.delete_state))


@table.patch("/vms/{name}/memory", does="vm_set_memory", responses=_doc(MemoryResult))
def vm_memory(ctx: Ctx, name: str, body: Memory) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.vm_set_memory(name, MemoryChange(**body.as_dict())))


@table.post("/vms/{name}/upgrade", does="vm_upgrade", responses=_doc(VMInfo))
def vm_upgrade(ctx: Ctx, name: str) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.vm_upgrade(name))


@table.post("/vms/{target:path}/exec", does="vm_exec", responses=_doc(ExecResult))
def vm_exec(ctx: Ctx, target: str, body: Exec) -> Answer:
    """Run a command in the guest (TARGET may be a path such as l1/l2); output base64."""
    with ctx.settings.service() as s:
        return _json(s.vm_exec(target, body.argv, timeout=body.timeout))


@table.get("/vms/{name}/log", does="vm_log",
           responses={200: {"content": {"application/octet-stream": {}}, "description": "bytes"}},
           query={"tail": (int | None, Query(None, ge=0, le=1 << 30)),
                  "until": (str | None, Query(None, pattern=rules.UNTIL, max_length=4096)),
                  "timeout": (float | None, Query(None, gt=0, le=86400))})
def vm_log(ctx: Ctx, name: str, tail: int | None = None, until: str | None = None,
           timeout: float | None = None) -> Answer:
    """The serial console's output (the last `tail` bytes); with `until`, wait for that text."""
    with ctx.settings.service() as s:
        data = b"".join(s.vm_log(name, until=until, timeout=timeout, tail=tail))
    return Answer(200, data, "application/octet-stream")


# -- tree, images --------------------------------------------------------------------------------
@table.get("/tree", does="tree", responses=_doc(Tree), query={"timeout": (float, Query(30.0, gt=0, le=86400))})
def tree(ctx: Ctx, timeout: float = 30.0) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.tree(timeout=timeout))


@table.get("/images", does="image_list", responses=_doc(list[ImageInfo]))
def image_list(ctx: Ctx) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.image_list())


@table.post("/images/debian/build", does="image_build_debian", status_code=202, responses=_doc(OPERATION, 202))
def image_build_debian(ctx: Ctx, body: DebianBuild | None = None) -> Answer:
    """Build (or reuse) a Debian disk image: release, packages, size and image_name (the
    operation's result is the stored image)."""
    from ..images.debian import DEFAULT_RELEASE, DEFAULT_SIZE, DebianRequest

    build = body or DebianBuild()
    force = build.force
    wanted = DebianRequest(release=build.release or DEFAULT_RELEASE, packages=tuple(build.packages),
                           size=DEFAULT_SIZE if build.size is None else build.size, name=build.image_name)
    with ctx.settings.service() as s:
        debian = s.image_check_debian(wanted)
    return ctx.runtime.operations.submit(
        f"build image '{debian.image_name}'", lambda s, op: s.image_build_debian(debian, op.progress, force=force),
        kind="image.build")


@table.post("/images/{name}/build", does="image_build", status_code=202, responses=_doc(OPERATION, 202),
            params={"name": {"enum": rules.BUILT_IN}})
def image_build(ctx: Ctx, name: str, body: ImageBuild | None = None) -> Answer:
    """Build (or reuse) appliance or nested-host (debian: POST /images/debian/build)."""
    force = (body or ImageBuild()).force
    return ctx.runtime.operations.submit(
        f"build image '{name}'", lambda s, op: s.image_build(name, op.progress, force=force), kind="image.build")


@table.get("/images/store", does="image_store_list", responses=_doc(list[StoredImageInfo]))
def image_store_list(ctx: Ctx) -> Answer:
    """The disk images (built from Debian packages or imported): format, sizes, the VMs using them."""
    with ctx.settings.service() as s:
        return _json(s.image_store_list())


@table.post("/images/store", does="image_import", status_code=202, responses=_doc(OPERATION, 202))
def image_import(ctx: Ctx, body: ImageImport) -> Answer:
    """Import a qcow2 or raw file of the server's host (qemu-img checks: no backing or data file,
    a known format, a sane size); stored as qcow2. An operation with progress."""
    path = api_file(ctx, body.path, "path") or Path()
    if not path.is_absolute():
        raise InvalidInput(f"path '{body.path[:200]}' is not absolute", hint="give the file's full path on the server's host")
    return ctx.runtime.operations.submit(
        f"import image '{body.path[:200]}'", lambda s, op: s.image_import(path, body.name, op.progress,
                                                                   fmt=body.format, force=body.force),
        kind="image.import")


@table.delete("/images/store/{name}", does="image_remove", status_code=204)
def image_remove(ctx: Ctx, name: str) -> Answer:
    """Remove a disk image (refused while a VM uses it)."""
    with ctx.settings.service() as s:
        s.image_remove(name)
    return empty()


# -- disk-image VMs: disks, checkpoints, address ---------------------------------------------------
@table.get("/vms/{name}/disks", does="vm_disk_list", responses=_doc(list[DiskInfo]))
def disk_list(ctx: Ctx, name: str) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.vm_disk_list(name))


@table.post("/vms/{name}/disks", does="vm_disk_add", status_code=201, responses=_doc(DiskInfo, 201))
def disk_add(ctx: Ctx, name: str, body: DiskNew) -> Answer:
    """An empty qcow2 data disk (while the VM is off)."""
    with ctx.settings.service() as s:
        result = s.vm_disk_add(name, body.name, body.size)
    ctx.runtime.events.publish("vm", {"vm": name, "action": "disk added", "disk": body.name})
    return _json(result, 201)


@table.patch("/vms/{name}/disks/{disk}", does="vm_disk_resize", responses=_doc(DiskResize))
def disk_resize(ctx: Ctx, name: str, disk: str, body: DiskSize) -> Answer:
    """Grow a disk; on a running VM online (QMP block_resize: the guest sees it at once)."""
    with ctx.settings.service() as s:
        result = s.vm_disk_resize(name, disk, body.size)
    ctx.runtime.events.publish("vm", {"vm": name, "action": "disk resized", "disk": disk})
    return _json(result)


@table.delete("/vms/{name}/disks/{disk}", does="vm_disk_remove", status_code=204)
def disk_remove(ctx: Ctx, name: str, disk: str) -> Answer:
    with ctx.settings.service() as s:
        s.vm_disk_remove(name, disk)
    ctx.runtime.events.publish("vm", {"vm": name, "action": "disk removed", "disk": disk})
    return empty()


@table.get("/vms/{name}/checkpoints", does="vm_checkpoint_list", responses=_doc(list[CheckpointInfo]))
def checkpoint_list(ctx: Ctx, name: str) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.vm_checkpoint_list(name))


@table.post("/vms/{name}/checkpoints", does="vm_checkpoint_new", status_code=202, responses=_doc(OPERATION, 202))
def checkpoint_new(ctx: Ctx, name: str, body: CheckpointNew) -> Answer:
    """Checkpoint-VM: of a stopped VM its disks, of a running one its disks and memory. Refusals
    (R12-R14 while a hypervisor runs inside, a taken name) answer at once; the work is an operation
    whose result is a CheckpointResult."""
    with ctx.settings.service() as s:
        s.vm_checkpoint_check(name, body.name, "new")
    return ctx.runtime.operations.submit(
        f"checkpoint '{body.name}' of vm '{name}'", lambda s, op: s.vm_checkpoint_new(name, body.name), vm=name,
        kind="vm.checkpoint.new")


@table.post("/vms/{name}/checkpoints/{checkpoint}/apply", does="vm_checkpoint_apply", status_code=202,
            responses=_doc(OPERATION, 202))
def checkpoint_apply(ctx: Ctx, name: str, checkpoint: str) -> Answer:
    """Restore-VMCheckpoint: one with memory to the running VM, one without to the stopped VM."""
    with ctx.settings.service() as s:
        s.vm_checkpoint_check(name, checkpoint, "apply")
    return ctx.runtime.operations.submit(
        f"apply checkpoint '{checkpoint}' to vm '{name}'", lambda s, op: s.vm_checkpoint_apply(name, checkpoint),
        vm=name, kind="vm.checkpoint.apply")


@table.delete("/vms/{name}/checkpoints/{checkpoint}", does="vm_checkpoint_remove", status_code=204)
def checkpoint_remove(ctx: Ctx, name: str, checkpoint: str) -> Answer:
    with ctx.settings.service() as s:
        s.vm_checkpoint_remove(name, checkpoint)
    ctx.runtime.events.publish("vm", {"vm": name, "action": "checkpoint removed", "checkpoint": checkpoint})
    return empty()


@table.get("/vms/{name}/address", does="vm_address", responses=_doc(VMAddress))
def vm_address(ctx: Ctx, name: str) -> Answer:
    """Where the running VM can be reached (what `vm ssh` connects to) and how it was found:
    the DHCP lease on a nestor NAT switch, the guest agent, or the static address."""
    with ctx.settings.service() as s:
        return _json(s.vm_address(name))


# -- network -------------------------------------------------------------------------------------
@table.get("/switches", does="switch_list", responses=_doc(list[SwitchInfo]))
def switch_list(ctx: Ctx) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.switch_list())


@table.post("/switches", does="switch_new", status_code=201, responses=_doc(SwitchInfo, 201))
def switch_new(ctx: Ctx, body: SwitchNew) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.switch_new(SwitchSpec(body.name, body.type, body.uplink, body.move_addresses)), 201)


@table.get("/switches/{name}", does="switch_show", responses=_doc(SwitchDetail))
def switch_show(ctx: Ctx, name: str) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.switch_show(name))


@table.put("/switches/{name}/address", does="switch_set_ip", responses=_doc(SwitchInfo))
def switch_set_ip(ctx: Ctx, name: str, body: SwitchAddress) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.switch_set_ip(name, body.address))


@table.delete("/switches/{name}", does="switch_remove", responses=_doc(SwitchRemoval), query={"force": (bool, Query(False))})
def switch_remove(ctx: Ctx, name: str, force: bool = False) -> Answer:
    """With `force` also the NAT and the adapters on it (the answer names them)."""
    with ctx.settings.service() as s:
        return _json(s.switch_remove(name, force=force))


@table.get("/vms/{vm}/adapters", does="adapter_list", responses=_doc(list[AdapterInfo]))
def adapter_list(ctx: Ctx, vm: str) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.adapter_list(vm))


@table.post("/vms/{vm}/adapters", does="adapter_add", status_code=201, responses=_doc(AdapterInfo, 201))
def adapter_add(ctx: Ctx, vm: str, body: AdapterNew) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.adapter_add(vm, AdapterSpec(body.switch, mac=body.mac, name=body.name)), 201)


@table.patch("/vms/{vm}/adapters/{name}", does="adapter_set", responses=_doc(AdapterInfo))
def adapter_set(ctx: Ctx, vm: str, name: str, body: AdapterSet) -> Answer:
    with ctx.settings.service() as s:
        change = GuardChange(mac_spoofing=body.mac_spoofing, router_guard=body.router_guard, dhcp_guard=body.dhcp_guard)
        return _json(s.adapter_set(vm, name, change))


@table.delete("/vms/{vm}/adapters/{name}", does="adapter_remove", status_code=204)
def adapter_remove(ctx: Ctx, vm: str, name: str) -> Answer:
    with ctx.settings.service() as s:
        s.adapter_remove(vm, name)
    return empty()


@table.get("/nats", does="nat_list", responses=_doc(list[NatInfo]))
def nat_list(ctx: Ctx) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.nat_list())


@table.post("/nats", does="nat_new", status_code=201, responses=_doc(NatInfo, 201))
def nat_new(ctx: Ctx, body: NatNew) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.nat_new(NatSpec(body.name, body.switch, body.prefix, dhcp=body.dhcp, host=body.host)), 201)


@table.get("/nats/{name}", does="nat_show", responses=_doc(NatInfo))
def nat_show(ctx: Ctx, name: str) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.nat_show(name))


@table.delete("/nats/{name}", does="nat_remove", status_code=204)
def nat_remove(ctx: Ctx, name: str) -> Answer:
    with ctx.settings.service() as s:
        s.nat_remove(name)
    return empty()


# -- labs (issue 17; docs/labs.md) ---------------------------------------------------------------
class Later:
    """A response model of nestor.lab.types, imported only when the OpenAPI document is made (an
    L1's daemon imports this table on its way to its first answer, under TCG)."""

    def __init__(self, name: str, many: bool = False) -> None:
        self.name, self.many = name, many

    def resolve(self) -> Any:
        from ..lab import types as lab_types

        model = getattr(lab_types, self.name)
        return list[model] if self.many else model  # type: ignore[valid-type]


class LabFile(Body):
    """A lab file as its text: an API caller names no file of the server's (docs/decisions.md)."""

    text: str = described(description="the lab file's YAML (docs/labs.md; its schema: docs/lab.schema.json)",
                          max_length=rules.MAX_LAB)
    source: str | None = described(None, "where the caller read it, for errors and `lab list` (never opened)",
                                   pattern=rules.LABEL)


def _lab_parsed(body: LabFile) -> str:
    """The lab's name; a bad file is refused now (400, the CLI's one line and hint), not in an operation."""
    from ..lab import file as lab_file
    from ..lab.session import label

    return lab_file.parse(body.text, label(body.source)).name


def _lab_known(ctx: Ctx, name: str) -> None:
    with ctx.settings.service() as s:
        s._labs().owners.get(name)


def _lab_operation(ctx: Ctx, name: str, action: str, call: Any) -> Answer:
    """Long lab work as an operation; `lab` events on /v1/events: its start, each progress line, its end."""
    events = ctx.runtime.events

    def work(s: Any, op: Any) -> Any:
        def progress(line: str) -> None:
            op.progress(line)
            events.publish("lab", {"lab": name, "action": action, "operation": op.id, "progress": line})

        events.publish("lab", {"lab": name, "action": action, "operation": op.id, "status": "running"})
        try:
            result = call(s, progress)
        except BaseException as exc:
            events.publish("lab", {"lab": name, "action": action, "operation": op.id, "status": "failure",
                                   "error": getattr(exc, "message", str(exc))[:500]})
            raise
        events.publish("lab", {"lab": name, "action": action, "operation": op.id, "status": "success"})
        return result

    return ctx.runtime.operations.submit(f"{action} lab '{name}'", work, kind=f"lab.{action}")


@table.get("/level", does="level_report", responses=_doc(Later("LevelReport")))
def level_report(ctx: Ctx) -> Answer:
    """This level in one answer: its VMs, switches, adapters and NATs, what a lab's plan compares
    its file to (one request per level instead of four lists); changes nothing."""
    with ctx.settings.service() as s:
        return _json(s.level_report())


@table.get("/labs", does="lab_list", responses=_doc(Later("LabInfo", many=True)))
def lab_list(ctx: Ctx) -> Answer:
    with ctx.settings.service() as s:
        return _json(s.lab_list())


@table.post("/labs/plan", does="lab_plan", responses=_doc(Later("LabPlan")))
def lab_plan(ctx: Ctx, body: LabFile) -> Answer:
    """What `lab up` of this file would do, level by level, and why, with the preflight's problems
    (non-empty: `lab up` would refuse); changes nothing."""
    with ctx.settings.service() as s:
        return _json(s.lab_plan(body.text, body.source))


@table.post("/labs", does="lab_up", status_code=202, responses=_doc(OPERATION, 202))
def lab_up(ctx: Ctx, body: LabFile) -> Answer:
    """Reconcile every level to the file (an operation; its result a LabUp). A malformed file is a
    400 now; a refused preflight is the operation's error (kind policy, rule preflight)."""
    name = _lab_parsed(body)
    return _lab_operation(ctx, name, "up", lambda s, progress: s.lab_up(body.text, progress, body.source))


@table.get("/labs/{name}", does="lab_status", responses=_doc(Later("LabStatus")))
def lab_status(ctx: Ctx, name: str) -> Answer:
    """The lab's tree, level by level, with each switch's, NAT's and VM's state."""
    with ctx.settings.service() as s:
        return _json(s.lab_status(name))


@table.get("/labs/{name}/inventory", does="lab_inventory", responses=_doc(Later("LabInventory")))
def lab_inventory(ctx: Ctx, name: str) -> Answer:
    """The lab's VMs and addresses: plainly (hosts) and as Ansible's JSON inventory (ansible)."""
    with ctx.settings.service() as s:
        return _json(s.lab_inventory(name))


@table.delete("/labs/{name}", does="lab_down", status_code=202, responses=_doc(OPERATION, 202))
def lab_down(ctx: Ctx, name: str) -> Answer:
    """Remove everything the lab made, at every level, and nothing else (an operation; its result a LabDown)."""
    _lab_known(ctx, name)
    return _lab_operation(ctx, name, "down", lambda s, progress: s.lab_down(name, progress))


@table.post("/labs/{name}/save", does="lab_save", status_code=202, responses=_doc(OPERATION, 202))
def lab_save(ctx: Ctx, name: str) -> Answer:
    """Save every running VM of the lab, deepest first (refused before anything is saved if one
    cannot be: kind policy, rule lab-save). An operation; its result a LabSaved."""
    _lab_known(ctx, name)
    return _lab_operation(ctx, name, "save", lambda s, progress: s.lab_save(name, progress))


@table.post("/labs/{name}/restore", does="lab_restore", status_code=202, responses=_doc(OPERATION, 202))
def lab_restore(ctx: Ctx, name: str) -> Answer:
    """Resume the lab's saved VMs top down (an operation; its result a LabRestored)."""
    _lab_known(ctx, name)
    return _lab_operation(ctx, name, "restore", lambda s, progress: s.lab_restore(name, progress))


# -- operations ----------------------------------------------------------------------------------
@table.get("/operations", does=RUNTIME, responses=_doc(list[Operation]))
def operation_list(ctx: Ctx) -> Answer:
    return json_answer(ctx.runtime.operations.list())


@table.get("/operations/{op_id}", does=RUNTIME, responses=_doc(OPERATION), query={"wait": (float, Query(0.0, ge=0, le=3600))})
def operation_show(ctx: Ctx, op_id: str, wait: float = 0.0) -> Answer:
    """One operation; with `wait`, answer once it has ended or `wait` seconds passed."""
    return json_answer(ctx.runtime.operations.get(op_id, wait))


@table.delete("/operations/{op_id}", does=RUNTIME, status_code=202, responses=_doc(OPERATION, 202))
def operation_cancel(ctx: Ctx, op_id: str) -> Answer:
    return json_answer(ctx.runtime.operations.cancel(op_id), 202)


# -- events of this level and below, for the level above (api/runtime.py, api/events_follow.py) --
@table.get("/events/recent", does=RUNTIME, responses=_doc(RecentEvents),
           query={"after": (int, Query(0, ge=0)), "limit": (int, Query(RING_PAGE, ge=0, le=RING_PAGE))})
def events_recent(ctx: Ctx, after: int = 0, limit: int = RING_PAGE) -> Answer:
    """The recent events numbered above `after`, oldest first (at most `limit`): how the level
    above follows this one in short requests (the stream, /v1/events, is this level's only)."""
    return json_answer(ctx.runtime.events.recent(after, limit))
