"""Every path nestor uses, named in one place (DESIGN.md section 4)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .images import contract

DB_NAME = "nestor.db"
QMP_SOCK = "qmp.sock"
SERIAL_SOCK = "serial.sock"
SERIAL_LOG = "serial.log"  # the console's output (QEMU appends), capped and rotated to serial.log.1 (engine/seriallog.py)
QGA_SOCK = "qga.sock"
PIDFILE = "qemu.pid"
QEMU_LOG = "qemu.log"
RUN_CPIO = "run.cpio"
INITRD = "initrd.img"
DISK = "disk.img"
LAUNCH = "launch.json"  # how the running QEMU was launched: accelerator, CPU model, argv, netns
API_SOCK = "api.sock"  # nested-host guests: the host end of the guest's nestor API channel
API_PORT = contract.API_PORT  # its virtio-serial port name (/dev/virtio-ports/… in the guest)
# memory (service/memory.py)
SAVED_STATE = "saved.state"  # the guest's state (QEMU's migration stream), while the VM is saved
SAVED_META = "saved.json"  # what restore needs to start the same QEMU: the memory room
SAVING = "saved.state.part"  # being written; never restored
RESTORING = "saved.state.restoring"  # loaded into QEMU, about to run on; never restored
MEMORY_FILE = "memory.json"  # the room the running QEMU was started with
BALANCER_STATUS = "balancer.json"  # the balancer's last decision, for `vm show`

# The daemon (`nestor serve`): a unix socket and pidfile per home, under RUN_DIR.
RUN_DIR = Path(os.environ.get("NESTOR_RUN_DIR", "/run/nestor"))


SUN_PATH_MAX = 107  # bytes of a unix socket path (sun_path is 108 with its NUL)
MAX_VM_ID_DIGITS = 7  # VM ids nestor plans socket room for (vms/9999999/)
CREATING_HINT = "check --home / NESTOR_HOME; commands that create things (vm new, switch new, image build) make a new home"


def max_home_bytes() -> int:
    """The longest home whose VM sockets (HOME/vms/ID/serial.sock) still fit a unix socket path."""
    longest = max(len(name) for name in (QMP_SOCK, SERIAL_SOCK, QGA_SOCK, API_SOCK))
    return SUN_PATH_MAX - len("/vms/") - MAX_VM_ID_DIGITS - 1 - longest


def check_home(given: str | Path) -> Path:
    """A usable home path, made absolute (a relative home is taken from the current directory,
    once, so QEMU, the daemon and every path nestor stores agree on it). Refused: empty, control
    characters, ',' (QEMU reads it as an option separator in -chardev path=...) and paths too
    long for the VMs' unix sockets."""
    from .errors import InvalidInput
    from .model import shown

    text = str(given)
    if not text:
        raise InvalidInput("the home directory path is empty", hint="give a directory, e.g. --home /var/lib/nestor")
    if not text.isprintable():
        raise InvalidInput(f"the home directory path {shown(text)} contains control characters",
                           hint="use a plain directory path")
    root = Path(os.path.abspath(text))
    if "," in str(root):
        raise InvalidInput(f"the home directory path {shown(str(root), 80)} contains ','",
                           hint="QEMU reads ',' as an option separator: use a path without it")
    size = len(os.fsencode(str(root)))
    if size > max_home_bytes():
        raise InvalidInput(f"the home directory path is too long ({size} bytes, at most {max_home_bytes()}): "
                           "the VMs' unix sockets live under it",
                           hint="use a shorter path, e.g. /var/lib/nestor")
    return root


# What nestor itself makes at the top of a home (the tightening of an old loose home touches only
# these), and which of them it tightens all the way down (images/ and cache/ are left: image files
# are shared read-only with QEMU's user).
OWN_ENTRIES = frozenset({DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", "vms", "images", "cache", "locks", "net", "tls",
                         "serve.pid", "serve.log", "serve.spawned", "serve.lock", "known_hosts", "tokens.json",
                         "remotes.json"})
TIGHTENED_TREES = frozenset({"vms", "locks", "net", "tls"})
# What nestor may find in a home before its database exists, which makes a directory nestor's too:
# the files it writes before the first database (`nestor token new` before the first `serve`, the
# daemon's lock and log, TLS files), an images/ or cache/ store linked in, and a fresh
# filesystem's lost+found.
_BEFORE_DB = frozenset({"lost+found", "images", "cache", "tokens.json", "remotes.json", "tls", "known_hosts",
                        "serve.pid", "serve.log", "serve.spawned", "serve.lock"})


def foreign_entries(root: Path) -> list[str]:
    """What in `root` nestor did not make (sorted names); [] for a missing directory."""
    if (root / DB_NAME).is_file():
        return []
    if not root.exists():
        return []
    return sorted(entry.name for entry in root.iterdir() if entry.name not in _BEFORE_DB)


def is_home(root: Path) -> bool:
    """A nestor home: a directory holding nestor.db (the marker: nestor makes it first), or one
    holding only what nestor writes before it (tokens.json, an images/ link, …)."""
    if not root.is_dir() or (root / DB_NAME).is_symlink():
        return False
    if (root / DB_NAME).is_file():
        return True
    try:
        return any(True for _ in root.iterdir()) and not foreign_entries(root)
    except OSError:
        return False


def check_takeover(root: Path, create: bool) -> None:
    """nestor uses a directory only if it is already a nestor home, or (for a command that creates
    things) it does not exist or is empty: a mistyped --home (~/projects, /usr/local) must never get
    a database, nor have its modes changed, and a read-only command creates nothing. Refused with
    InvalidInput / NotFound naming the directory and the fix."""
    from .errors import InvalidInput, NotFound
    from .model import shown

    if root.exists() and not root.is_dir():
        raise InvalidInput(f"cannot use home directory {root}: it is not a directory",
                           hint="give a new or empty directory with --home / NESTOR_HOME")
    if is_home(root):
        return
    try:
        foreign = foreign_entries(root)
    except OSError as exc:
        raise InvalidInput(f"cannot use home directory {root}: {exc.strerror or exc}",
                           hint="give a new or empty directory with --home / NESTOR_HOME") from exc
    if not foreign and not create:
        raise NotFound(f"cannot use home directory {root}: it is not a nestor home (no {DB_NAME})", hint=CREATING_HINT)
    if foreign:
        listed = ", ".join(shown(name, 40) for name in foreign[:3]) + (", …" if len(foreign) > 3 else "")
        error = NotFound if not create else InvalidInput
        raise error(f"cannot use home directory {root}: it is not a nestor home (no {DB_NAME}) and not empty "
                    f"({listed}); nestor takes over only a new or empty directory",
                    hint=f"check --home / NESTOR_HOME, or give a new directory (e.g. --home {root / 'nestor'})")


def default_home() -> Path:
    env = os.environ.get("NESTOR_HOME")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/nestor")
    return Path.home() / ".local" / "share" / "nestor"


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def db(self) -> Path:
        return self.root / DB_NAME

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def qemu_caps(self) -> Path:
        """What the host's QEMU supports, probed once per binary (engine/runas.py)."""
        return self.cache / "qemu.json"

    @property
    def vms(self) -> Path:
        return self.root / "vms"

    def vm_dir(self, vm_id: int) -> Path:
        """Short per-VM directory: unix socket paths are limited to 108 bytes."""
        return self.vms / str(vm_id)

    def image_dir(self, name: str) -> Path:
        return self.images / name

    @property
    def id(self) -> str:
        """A short identity of this home (its resolved path), for names shared on one host."""
        import hashlib

        return hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:8]

    @property
    def api_socket(self) -> Path:
        """The daemon's default unix socket: /run/nestor/nestor.sock for the default home."""
        if self.root.resolve() == default_home().resolve():
            return RUN_DIR / "nestor.sock"
        return RUN_DIR / f"nestor-{self.id}.sock"

    @property
    def daemon_pidfile(self) -> Path:
        return self.root / "serve.pid"

    @property
    def daemon_log(self) -> Path:
        return self.root / "serve.log"


@dataclass(frozen=True)
class VMFiles:
    """The files of one VM's directory."""

    dir: Path

    @property
    def serial_log(self) -> Path:
        return self.dir / SERIAL_LOG

    @property
    def serial_sock(self) -> Path:
        return self.dir / SERIAL_SOCK

    @property
    def qga_sock(self) -> Path:
        return self.dir / QGA_SOCK

    @property
    def qmp_sock(self) -> Path:
        return self.dir / QMP_SOCK

    @property
    def api_sock(self) -> Path:
        return self.dir / API_SOCK

    @property
    def lock(self) -> Path:
        """Outside the VM's directory: `vm remove` deletes that, and a waiter must not win a lock
        on a deleted VM (home/locks/vm-ID.lock is never deleted)."""
        return self.dir.parent.parent / "locks" / f"vm-{self.dir.name}.lock"

    @property
    def launch(self) -> Path:
        return self.dir / LAUNCH

    @property
    def qemu_log(self) -> Path:
        return self.dir / QEMU_LOG

    @property
    def run_cpio(self) -> Path:
        return self.dir / RUN_CPIO

    @property
    def saved_state(self) -> Path:
        return self.dir / SAVED_STATE

    @property
    def saved_meta(self) -> Path:
        return self.dir / SAVED_META

    @property
    def saving(self) -> Path:
        return self.dir / SAVING

    @property
    def restoring(self) -> Path:
        return self.dir / RESTORING

    @property
    def memory(self) -> Path:
        return self.dir / MEMORY_FILE

    @property
    def balancer_status(self) -> Path:
        return self.dir / BALANCER_STATUS
