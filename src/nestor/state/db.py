"""Open the database, migrate it, and store VM configurations."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from ..errors import Conflict, HostError, NotFound
from ..model import BootSource, VMConfig

BUSY_TIMEOUT_MS = 10_000

# Each entry moves the schema one version up; PRAGMA user_version records where we are.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE vms (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        vcpus INTEGER NOT NULL,
        memory INTEGER NOT NULL,
        nested INTEGER NOT NULL DEFAULT 0,
        config_version TEXT NOT NULL,
        image TEXT,
        kernel TEXT,
        initrd TEXT,
        append TEXT NOT NULL DEFAULT '',
        run_script TEXT,
        created REAL NOT NULL DEFAULT (julianday('now'))
    );
    """,
    # Networking (nestor/net/store.py): netns NULL = the root network namespace.
    """
    CREATE TABLE switches (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL CHECK (type IN ('internal', 'private', 'external')),
        netns TEXT,
        uplink TEXT,
        address TEXT,
        created REAL NOT NULL DEFAULT (julianday('now'))
    );
    CREATE TABLE adapters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        vm_id INTEGER NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        switch_id INTEGER NOT NULL REFERENCES switches(id),
        mac TEXT NOT NULL UNIQUE,
        mac_spoofing INTEGER NOT NULL DEFAULT 0,
        netns TEXT,
        UNIQUE (vm_id, name)
    );
    CREATE TABLE nats (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        switch_id INTEGER NOT NULL UNIQUE REFERENCES switches(id),
        prefix TEXT NOT NULL,
        dhcp INTEGER NOT NULL DEFAULT 0
    );
    """,
    # Memory (nestor/memory.py): `memory` stays the startup size; NULL min/max = the defaults.
    """
    ALTER TABLE vms ADD COLUMN dynamic_memory INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE vms ADD COLUMN memory_minimum INTEGER;
    ALTER TABLE vms ADD COLUMN memory_maximum INTEGER;
    ALTER TABLE vms ADD COLUMN memory_buffer INTEGER NOT NULL DEFAULT 20;
    """,
    # Other machines (nestor/remote/store.py): libvirt hosts and the VMs nestor made on them.
    # A host with VMs cannot be deleted (no ON DELETE CASCADE): `host remove` refuses first.
    """
    CREATE TABLE hosts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        uri TEXT NOT NULL UNIQUE,
        created REAL NOT NULL DEFAULT (julianday('now'))
    );
    CREATE TABLE remote_vms (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        host_id INTEGER NOT NULL REFERENCES hosts(id),
        uuid TEXT NOT NULL UNIQUE,
        vcpus INTEGER NOT NULL,
        memory INTEGER NOT NULL,
        memory_maximum INTEGER NOT NULL,
        nested INTEGER NOT NULL DEFAULT 0,
        disk TEXT,
        kernel TEXT,
        initrd TEXT,
        append TEXT,
        network TEXT,
        mac TEXT,
        mac_spoofing INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL DEFAULT (julianday('now'))
    );
    CREATE INDEX remote_vms_host ON remote_vms(host_id);
    """,
    # Network hardening (nestor/net/store.py): the router and DHCP guards, on by default (also
    # for adapters made before); an external switch's moved uplink configuration (JSON).
    """
    ALTER TABLE adapters ADD COLUMN router_guard INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE adapters ADD COLUMN dhcp_guard INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE switches ADD COLUMN moved TEXT;
    """,
    # Disk-image guests (service/diskvms.py): machine, firmware, cloud-init; their disks
    # (service/disks.py); static addresses for the cloud-init network-config.
    """
    CREATE TABLE vm_guests (
        vm_id INTEGER PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
        generation INTEGER NOT NULL CHECK (generation IN (1, 2)),
        secure_boot INTEGER NOT NULL DEFAULT 0,
        image TEXT,
        iso TEXT,
        user TEXT,
        ssh_key TEXT,
        hostname TEXT,
        user_data TEXT
    );
    CREATE TABLE vm_disks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        vm_id INTEGER NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        file TEXT NOT NULL,
        UNIQUE (vm_id, name)
    );
    CREATE TABLE adapter_addresses (
        adapter_id INTEGER PRIMARY KEY REFERENCES adapters(id) ON DELETE CASCADE,
        address TEXT NOT NULL,
        gateway TEXT,
        dns TEXT NOT NULL DEFAULT ''
    );
    """,
    # NAT on libvirt hosts (nestor/remote/nats.py): a libvirt NAT network nestor defined there.
    """
    CREATE TABLE remote_nats (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        host_id INTEGER NOT NULL REFERENCES hosts(id),
        uuid TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        dhcp INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL DEFAULT (julianday('now'))
    );
    """,
    # Host policy and the audit log (state/hostpolicy.py, state/audit.py): the host's settings
    # (nesting allow|block) as name/value rows; one audit row per change of state, who/what/result.
    """
    CREATE TABLE host_settings (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        changed REAL NOT NULL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        via TEXT NOT NULL,
        uid INTEGER,
        pid INTEGER,
        token TEXT,
        operation TEXT NOT NULL,
        target TEXT,
        result TEXT NOT NULL,
        rule TEXT,
        message TEXT
    );
    CREATE INDEX audit_time ON audit(time);
    """,
    # Labs (nestor/lab/owners.py): a lab's file text, and every object it made at every level
    # (level '' is this home's; 'hv1' is inside VM hv1), so `lab down` removes those and nothing else.
    """
    CREATE TABLE labs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        source TEXT,
        netns TEXT,
        text TEXT NOT NULL,
        created REAL NOT NULL DEFAULT (julianday('now')),
        updated REAL NOT NULL DEFAULT (julianday('now'))
    );
    CREATE TABLE lab_objects (
        lab_id INTEGER NOT NULL REFERENCES labs(id) ON DELETE CASCADE,
        level TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('vm', 'switch', 'nat')),
        name TEXT NOT NULL,
        UNIQUE (level, kind, name)
    );
    """,
    # A Windows-ready VM (issue 19): Hyper-V enlightenments ('off' | 'hyperv') and a virtual TPM 2.0.
    """
    ALTER TABLE vms ADD COLUMN enlightenments TEXT NOT NULL DEFAULT 'off';
    ALTER TABLE vms ADD COLUMN tpm INTEGER NOT NULL DEFAULT 0;
    """,
)


def connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        migrate(conn)
    except (OSError, sqlite3.OperationalError) as exc:
        raise HostError(
            f"cannot use home directory {path.parent}: {exc}",
            hint="pass a writable directory with --home or NESTOR_HOME",
        ) from exc
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version >= len(MIGRATIONS):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]  # re-read under the lock
        for step in range(version, len(MIGRATIONS)):
            for statement in MIGRATIONS[step].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version={len(MIGRATIONS)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _to_config(row: sqlite3.Row) -> VMConfig:
    return VMConfig(
        id=row["id"],
        name=row["name"],
        vcpus=row["vcpus"],
        memory=row["memory"],
        nested=bool(row["nested"]),
        config_version=row["config_version"],
        boot=BootSource(
            image=row["image"],
            kernel=row["kernel"],
            initrd=row["initrd"],
            append=row["append"],
            run_script=row["run_script"],
        ),
        dynamic_memory=bool(row["dynamic_memory"]),
        memory_minimum=row["memory_minimum"],
        memory_maximum=row["memory_maximum"],
        memory_buffer=row["memory_buffer"],
        enlightenments=row["enlightenments"],
        tpm=bool(row["tpm"]),
    )


class VMRepo:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(self, config: VMConfig) -> VMConfig:
        boot = config.boot
        if self.conn.execute("SELECT 1 FROM remote_vms WHERE name = ?", (config.name,)).fetchone():
            raise Conflict(f"vm '{config.name}' already exists (on a libvirt host)", hint="choose another name")
        try:
            self.conn.execute(
                "INSERT INTO vms (name, vcpus, memory, nested, config_version, image, kernel, initrd,"
                " append, run_script, enlightenments, tpm) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (config.name, config.vcpus, config.memory, int(config.nested), config.config_version,
                 boot.image, boot.kernel, boot.initrd, boot.append, boot.run_script, config.enlightenments,
                 int(config.tpm)),
            )
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" not in str(exc):
                raise
            raise Conflict(f"vm '{config.name}' already exists", hint="choose another name") from exc
        return self.get(config.name)

    def find(self, name: str) -> VMConfig | None:
        row = self.conn.execute("SELECT * FROM vms WHERE name = ?", (name,)).fetchone()
        return _to_config(row) if row else None

    def get(self, name: str) -> VMConfig:
        config = self.find(name)
        if config is None:
            raise NotFound(f"vm '{name}' not found", hint="nestor vm list shows the VMs")
        return config

    def all(self) -> Iterator[VMConfig]:
        for row in self.conn.execute("SELECT * FROM vms ORDER BY name"):
            yield _to_config(row)

    def update(self, config: VMConfig) -> None:
        self.conn.execute(
            "UPDATE vms SET vcpus=?, memory=?, nested=?, config_version=?, dynamic_memory=?, memory_minimum=?,"
            " memory_maximum=?, memory_buffer=?, enlightenments=?, tpm=? WHERE id=?",
            (config.vcpus, config.memory, int(config.nested), config.config_version, int(config.dynamic_memory),
             config.memory_minimum, config.memory_maximum, config.memory_buffer, config.enlightenments,
             int(config.tpm), config.id),
        )

    def remove(self, vm_id: int) -> None:
        self.conn.execute("DELETE FROM vms WHERE id = ?", (vm_id,))
