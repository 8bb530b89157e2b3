"""Placement among libvirt hosts, the move rule and migration flags: pure."""

import pytest

from nestor.errors import InvalidInput, NotFound, PolicyError, StateError
from nestor.policy import migration as migration_rules
from nestor.policy.placement import Candidate, place, why_not
from nestor.remote import migration, uri

G = 1 << 30


def hosts() -> list[Candidate]:
    return [
        Candidate("a", True, 8 * G, True),
        Candidate("b", True, 30 * G, False, "svm is disabled in the host-model CPU"),
        Candidate("c", True, 12 * G, True),
        Candidate("d", False, 0, False, error="cannot connect"),
    ]


def test_most_free_memory_wins() -> None:
    assert place(hosts(), 1 * G, nested=False).host == "b"


def test_nested_only_among_hosts_that_can_offer_it() -> None:
    chosen = place(hosts(), 1 * G, nested=True)
    assert chosen.host == "c"
    assert "nesting" in chosen.reason
    assert dict(chosen.passed_over)["b"].startswith("cannot offer nesting (svm is disabled")
    assert dict(chosen.passed_over)["d"] == "unreachable (cannot connect)"


def test_memory_must_fit() -> None:
    assert place(hosts(), 10 * G, nested=True).host == "c"
    assert why_not(hosts()[0], 10 * G, nested=True) == "only 8G free, the VM needs 10G"


def test_no_host_names_every_reason() -> None:
    with pytest.raises(PolicyError) as info:
        place(hosts(), 16 * G, nested=True)
    message = info.value.message
    assert "no host can take a nested-enabled VM (16G)" in message
    for name in "abcd":
        assert f"{name}: " in message
    with pytest.raises(NotFound, match="no libvirt hosts"):
        place([], G, nested=False)


def test_ties_go_to_the_first_name() -> None:
    assert place([Candidate("y", True, G, True), Candidate("x", True, G, True)], G // 2, nested=False).host == "x"


def test_move_rule() -> None:
    with pytest.raises(PolicyError, match=r"cannot be moved \(rules R12-R14\): a hypervisor is running"):
        migration_rules.check_move("l1", "a", "b", True, "EFER.SVME", vm_running=True)
    with pytest.raises(StateError, match="cannot tell whether a hypervisor runs inside"):
        migration_rules.check_move("l1", "a", "b", None, "unknown: no monitor", vm_running=True)
    with pytest.raises(InvalidInput, match="already on host 'a'"):
        migration_rules.check_move("l1", "a", "a", False, "", vm_running=True)
    migration_rules.check_move("l1", "a", "b", False, "", vm_running=True)
    migration_rules.check_move("l1", "a", "b", None, "vm is off", vm_running=False)  # off: definition only


def test_vendor_extension_must_match_for_a_live_move() -> None:
    with pytest.raises(StateError, match="cannot be moved live"):
        migration_rules.check_same_extension("l1", "b", "svm", "vmx")
    migration_rules.check_same_extension("l1", "b", "svm", "svm")


def test_migration_flags_are_libvirts() -> None:
    import libvirt

    live = migration.plan("l1", running=True)
    assert live.flags == libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    assert live.params == {libvirt.VIR_MIGRATE_PARAM_DEST_NAME: "l1"}
    off = migration.plan("l1", running=False)
    assert off.flags == libvirt.VIR_MIGRATE_OFFLINE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    assert migration.flag_names(live.flags) == ["live", "persist-dest", "undefine-source"]


def test_copy_storage_plan_is_libvirts() -> None:
    import libvirt

    copy = migration.StorageCopy("vda", "/a/pool/l1.qcow2", "/b/pool/l1.qcow2", "<domain/>")
    live = migration.plan("l1", running=True, copy=copy)
    assert live.flags == (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
                          | libvirt.VIR_MIGRATE_NON_SHARED_DISK)
    assert live.params == {libvirt.VIR_MIGRATE_PARAM_DEST_NAME: "l1", libvirt.VIR_MIGRATE_PARAM_DEST_XML: "<domain/>",
                           libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: "<domain/>",
                           libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: ["vda"]}
    assert "copy-storage" in migration.flag_names(live.flags)
    with pytest.raises(ValueError, match="only in a live migration"):
        migration.plan("l1", running=False, copy=copy)


def test_progress_line() -> None:
    stats = {"memory_total": 1 << 30, "memory_processed": 256 << 20, "memory_bps": 100 << 20}
    assert migration.progress_text(stats) == "migrating: 256/1024 MiB (25%), 100 MiB/s"
    assert migration.progress_text({}) is None
    copying = {"disk_total": 8 << 30, "disk_processed": 2 << 30, "disk_bps": 200 << 20, "memory_total": 1 << 30}
    assert migration.progress_text(copying) == "copying storage: 2048/8192 MiB (25%), 200 MiB/s"
    copied = {**copying, "disk_processed": 8 << 30, "memory_processed": 512 << 20}
    assert migration.progress_text(copied) == "migrating: 512/1024 MiB (50%)"


def test_uri_of_a_missing_test_file_is_not_found() -> None:
    with pytest.raises(NotFound, match="no such file"):
        uri.validate("test:///no/such/file.xml")


@pytest.mark.parametrize("good", ["qemu+ssh://root@host-a/system", "qemu+tcp://10.0.0.2/system",
                                  "qemu+tls://host-b.example/system", "test:///default", "qemu:///system",
                                  "qemu+ssh://admin@[fd00::2]:2222/system?no_tty=1&mode=legacy", "qemu+ssh://h:22/system"])
def test_uri_accepted(good: str) -> None:
    assert uri.validate(good) == good


@pytest.mark.parametrize(("bad", "what"), [
    ("http://host/system", "unsupported"), ("qemu+ssh:///system", "no host name"),
    ("qemu+ssh://h/", "must end in /system"), ("test:///relative.txt", "absolute path to a .xml"),
    ("test://h/default", "in-process"), ("", "unsupported"),
    # issue 18: query keys that make libvirt (root, here) run a program, read a file or skip a check
    ("qemu+ssh://h/system?command=/tmp/x", "'command' is not allowed"), ("qemu+ssh://h/system?netcat=/tmp/x", "'netcat'"),
    ("qemu+ssh://h/system?keyfile=/etc/shadow", "'keyfile'"), ("qemu+tls://h/system?no_verify=1", "'no_verify'"),
    ("qemu+tcp://h/system?socket=/run/x", "'socket'"), ("qemu+tls://h/system?pkipath=/tmp", "'pkipath'"),
    ("qemu+ssh://h/system?known_hosts=/etc/passwd", "'known_hosts'"), ("qemu:///system?socket=/tmp/s", "'socket'"),
    ("qemu+ssh://h/system?no_tty=1&COMMAND=x", "'COMMAND'"), ("qemu+ssh://h/system?no_tty=yes", "'no_tty=yes'"),
    ("qemu+ssh://h/system?no_tty=1&no_tty=1", "twice"), ("qemu+ssh://h/system?no_tty", "malformed"),
    ("qemu+ssh://h/system#frag", "fragment"), ("test:///default?x=1", "no query"),
    ("qemu+ssh://-oProxyCommand=x/system", "invalid host name"), ("qemu+ssh://h:0/system", "invalid port"),
    ("qemu+ssh://u:secret@h/system", "invalid user name"),
])
def test_uri_refused(bad: str, what: str) -> None:
    with pytest.raises(InvalidInput, match=what):
        uri.validate(bad)


def test_a_move_between_tls_hosts_is_encrypted_and_others_say_they_are_not() -> None:
    """Issue 18: `vm move` sent RAM and disk in clear. Between qemu+tls:// hosts the stream uses
    libvirt's TLS migration; between in-process or local hosts nothing crosses a network; over
    qemu+ssh:// or qemu+tcp:// it cannot be encrypted without certificates, and the move says so."""
    import libvirt

    assert migration.VIR_MIGRATE_TLS == libvirt.VIR_MIGRATE_TLS
    tls = migration.plan("l1", True, None, "qemu+tls://a/system", "qemu+tls://b/system")
    assert tls.flags & libvirt.VIR_MIGRATE_TLS and tls.transport == "tls" and "tls" in migration.flag_names(tls.flags)
    assert migration.transport_note(tls) is None
    copy = migration.StorageCopy("vda", "/a/l1.qcow2", "/b/l1.qcow2", "<domain/>")
    assert migration.plan("l1", True, copy, "qemu+tls://a/system", "qemu+tls://b/system").flags & libvirt.VIR_MIGRATE_TLS
    for source, dest in (("qemu+ssh://root@a/system", "qemu+ssh://root@b/system"), ("qemu+tls://a/system", "qemu+tcp://b/system"),
                         ("qemu+ssh://a/system", "qemu+tls://b/system")):
        plain = migration.plan("l1", True, None, source, dest)
        assert not plain.flags & libvirt.VIR_MIGRATE_TLS and plain.transport == "unencrypted"
        assert "unencrypted" in (migration.transport_note(plain) or ""), (source, dest)
    local = migration.plan("l1", True, None, "test:///default", "test:///tmp/b.xml")
    assert local.transport == "local" and migration.transport_note(local) is None
    off = migration.plan("l1", False, None, "qemu+tls://a/system", "qemu+tls://b/system")
    assert not off.flags & libvirt.VIR_MIGRATE_TLS  # an off VM moves only its definition, over libvirt's own TLS
