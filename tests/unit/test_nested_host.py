"""Unit tests for nestor.images.nested_host: no QEMU, no network, no mmdebstrap.

The payload tests walk the real venv (the dependencies nestor runs with) and, where mkfs.ext4
is installed, build a real (small) payload image from a fake installed distribution.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from nestor.errors import ImageError
from nestor.images import appliance, nested_host, publish
from nestor.images import rootfs as rootfs_module
from nestor.images.nested_host import (
    BOOT_LINE,
    GUEST_INIT,
    INITTAB,
    PACKAGES,
    ROOTFS_FILES,
    ROOTFS_SYMLINKS,
    SHUTDOWN_SCRIPT,
    Entry,
    Installed,
    NestedHostImage,
    build_payload,
    configure_rootfs,
    dependency_closure,
    distribution_files,
    init_script,
    inputs_hash,
    installed_nestor,
    load_nested_host,
    mmdebstrap_argv,
    mmdebstrap_error,
    normalize,
    parse_requirement,
    payload_entries,
    payload_hash,
    payload_image_size,
    populate_payload,
    prune_payloads,
    rootfs_image_size,
    rootfs_inputs,
    running_payload,
    wrapper_script,
)

REPO = Path(__file__).resolve().parents[2]
VERSION = "6.1.0-99-cloud-amd64"

needs_mkfs = pytest.mark.skipif(shutil.which("mkfs.ext4") is None or shutil.which("debugfs") is None,
                                reason="e2fsprogs not installed")
needs_busybox = pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox not installed")


def make_appliance(images_dir: Path, version: str = VERSION) -> appliance.ApplianceImage:
    """A fake built kernel + appliance that load_appliance accepts."""
    kernel = images_dir / appliance.KERNEL_DIR
    modules = kernel / "lib" / "modules" / version
    modules.mkdir(parents=True)
    (modules / "modules.dep").write_text("kernel/virtio_mmio.ko:\n")
    (modules / "modules.alias").write_text("alias virtio:d* virtio_mmio\n")
    (modules / "kernel").mkdir()
    (modules / "kernel" / "virtio_mmio.ko").write_bytes(b"\0" * 64)
    (kernel / appliance.VMLINUX).write_bytes(b"\x7fELF fake vmlinux")
    (kernel / publish.MANIFEST).write_text(json.dumps({"format": appliance.FORMAT, "version": version}))
    top = images_dir / appliance.APPLIANCE_DIR
    top.mkdir(parents=True)
    (top / appliance.INITRD).write_bytes(b"070701 fake initrd")
    (top / publish.MANIFEST).write_text(json.dumps(
        {"format": appliance.FORMAT, "kernel_version": version, "recipe": appliance.appliance_recipe()}))
    image = appliance.load_appliance(images_dir)
    assert image is not None, "the fake appliance must look built"
    return image


DEPENDENCIES = ("qemu.qmp", "pyroute2", "click", "rich")


def make_installed(root: Path, dependencies: list[str]) -> Installed:
    """A tiny installed nestor: a package with a module, a shell file and byte code to skip."""
    from nestor.images.payload import package_files

    package = root / "nestor"
    (package / "images").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text("print('nestor')\n")
    (package / "images" / "x_init.sh").write_text("#!/bin/sh\n")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"junk")
    files = tuple((f"nestor/{rel}", path) for rel, path in package_files(package))
    metadata = "Metadata-Version: 2.1\nName: nestor\nVersion: 9.9\n" + "".join(
        f"Requires-Dist: {d}\n" for d in dependencies)
    return Installed("nestor", "9.9", metadata, files, (*dependencies, 'pytest>=8; extra == "test"'))


# -- the contract -----------------------------------------------------------------------------


def test_contract_names() -> None:
    assert BOOT_LINE == "nestor-nested-host: ready"
    fields = NestedHostImage.__dataclass_fields__
    assert list(fields) == ["kernel", "initrd", "rootfs"]
    assert 'BOOT_LINE="$NESTED_HOST_BOOT_LINE"' in init_script()  # from the contract it sources


def test_packages_are_the_designed_set() -> None:
    for package in ("python3", "qemu-system-x86", "qemu-guest-agent", "iproute2", "nftables",
                    "dnsmasq-base", "busybox", "kmod"):
        assert package in PACKAGES
    assert "systemd" not in PACKAGES and not any(p.startswith("linux-image") for p in PACKAGES)


# -- rootfs inputs and the manifest -----------------------------------------------------------


def test_inputs_hash_is_stable_and_tracks_its_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    first = inputs_hash(rootfs_inputs(VERSION))
    assert first == inputs_hash(rootfs_inputs(VERSION))
    assert first != inputs_hash(rootfs_inputs("6.1.0-100-cloud-amd64"))
    monkeypatch.setattr(rootfs_module, "PACKAGES", (*PACKAGES, "strace"))
    assert first != inputs_hash(rootfs_inputs(VERSION))
    monkeypatch.setattr(rootfs_module, "PACKAGES", PACKAGES)
    monkeypatch.setattr(rootfs_module, "init_script", lambda: "#!/bin/sh\n# changed\n")
    assert first != inputs_hash(rootfs_inputs(VERSION))


def test_inputs_include_init_and_every_written_file() -> None:
    inputs = rootfs_inputs(VERSION)
    assert inputs["init"] == init_script()
    files = inputs["files"]
    assert isinstance(files, dict)
    assert set(files) == set(ROOTFS_FILES)


def write_nested_manifest(images_dir: Path, inputs: str) -> Path:
    """Write the manifest; return the rootfs path it names."""
    top = images_dir / nested_host.NESTED_HOST_DIR
    top.mkdir(parents=True, exist_ok=True)
    (top / publish.MANIFEST).write_text(json.dumps({"format": nested_host.FORMAT, "inputs": inputs}))
    return top / nested_host.rootfs_name(inputs)


def make_nested_host(images_dir: Path) -> Path:
    """A fake built nested-host image (on a fake appliance of VERSION); its rootfs."""
    rootfs = write_nested_manifest(images_dir, inputs_hash(rootfs_inputs(VERSION)))
    rootfs.write_bytes(b"")
    return rootfs


def test_load_nested_host(tmp_path: Path) -> None:
    assert load_nested_host(tmp_path) is None  # nothing built
    image = make_appliance(tmp_path)
    rootfs = write_nested_manifest(tmp_path, inputs_hash(rootfs_inputs(VERSION)))
    assert load_nested_host(tmp_path) is None  # no rootfs image yet
    rootfs.write_bytes(b"")
    loaded = load_nested_host(tmp_path)
    assert loaded == NestedHostImage(kernel=image.kernel, initrd=image.initrd, rootfs=rootfs)
    assert rootfs.name.startswith("rootfs-") and rootfs.suffix == ".img"


def test_load_nested_host_rejects_stale_inputs(tmp_path: Path) -> None:
    make_appliance(tmp_path)
    rootfs = write_nested_manifest(tmp_path, inputs_hash(rootfs_inputs("6.1.0-1-cloud-amd64")))
    rootfs.write_bytes(b"")
    assert load_nested_host(tmp_path) is None
    (rootfs.parent / publish.MANIFEST).write_text("{not json")
    assert load_nested_host(tmp_path) is None


def test_build_nested_host_uses_the_cache_without_mmdebstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_appliance(tmp_path)
    rootfs = write_nested_manifest(tmp_path, inputs_hash(rootfs_inputs(VERSION)))
    rootfs.write_bytes(b"")

    def no_mmdebstrap(*_args: object) -> None:
        raise AssertionError("mmdebstrap must not run for a cached image")

    monkeypatch.setattr(rootfs_module, "run_mmdebstrap", no_mmdebstrap)
    lines: list[str] = []
    image = nested_host.build_nested_host(tmp_path, lines.append)
    assert image.rootfs == rootfs
    assert any("nested-host: cached" in line for line in lines)


def test_mmdebstrap_argv() -> None:
    argv = mmdebstrap_argv(Path("/tmp/x/rootfs"))
    assert argv[:3] == ["mmdebstrap", "--mode=root", "--variant=apt"]
    assert "--aptopt=APT::Install-Recommends \"false\"" in argv
    assert f"--include={','.join(PACKAGES)}" in argv
    assert argv[-2:] == ["bookworm", "/tmp/x/rootfs"]
    assert not any(a.startswith(("http://", "https://")) for a in argv)  # mmdebstrap's default mirror


def test_mmdebstrap_error_prefers_the_first_error_line() -> None:
    lines = ["I: running apt-get update...", "E: apt-get update failed", "E: later noise", ""]
    assert mmdebstrap_error(lines) == "apt-get update failed"
    assert mmdebstrap_error(["I: something", "Killed"]) == "Killed"
    assert mmdebstrap_error([]) == ""


def test_run_mmdebstrap_failure_names_the_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "mmdebstrap"
    fake.write_text("#!/bin/sh\necho 'I: running apt-get update...'\necho 'E: cannot reach the mirror' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    lines: list[str] = []
    with pytest.raises(ImageError) as info:
        nested_host.run_mmdebstrap(tmp_path / "rootfs", tmp_path / "log", lines.append)
    assert "mmdebstrap" in info.value.message and "cannot reach the mirror" in info.value.message
    assert info.value.hint and str(tmp_path / "log") in info.value.hint
    assert lines == ["I: running apt-get update...", "E: cannot reach the mirror"]


def test_image_sizes() -> None:
    mib = 1 << 20
    size = rootfs_image_size(300 * mib)
    assert size % mib == 0 and size >= 300 * mib + nested_host.ROOTFS_HEADROOM
    assert payload_image_size(100 * mib) >= 120 * mib
    assert payload_image_size(1) % mib == 0


# -- the rootfs configuration -----------------------------------------------------------------


def test_configure_rootfs(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(b"")
    (root / "sbin").mkdir()
    (root / "sbin" / "init").write_text("systemd was here")
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "less").write_text("the real less")
    configure_rootfs(root)
    init = root / GUEST_INIT.lstrip("/")
    assert init.read_text() == init_script() and os.access(init, os.X_OK)
    assert os.readlink(root / "sbin" / "init") == "/bin/busybox"
    assert os.readlink(root / "sbin" / "poweroff") == "/bin/busybox"
    assert os.readlink(root / "var" / "lib" / "nestor" / "images") == "/opt/nestor/images"
    assert os.readlink(root / "usr" / "local" / "bin" / "nestor") == "/opt/nestor/bin/nestor"
    assert os.readlink(root / "usr" / "local" / "bin" / "mount") == "/bin/busybox"
    assert not (root / "usr" / "local" / "bin" / "less").exists()  # a package provides it
    assert os.access(root / "sbin" / "shutdown", os.X_OK)
    assert os.access(root / "etc" / "acpi" / "PWRF" / "00000080", os.X_OK)
    assert (root / "opt" / "nestor").is_dir()
    for path in (*ROOTFS_FILES, *ROOTFS_SYMLINKS):
        assert (root / path).is_symlink() or (root / path).is_file(), path
    configure_rootfs(root)  # idempotent


def test_configure_rootfs_needs_busybox(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="busybox"):
        configure_rootfs(tmp_path)


def test_inittab_runs_every_stage_of_the_init_script() -> None:
    script = init_script()
    for stage in ("sysinit", "ready", "agent", "console", "shutdown"):
        assert f"{GUEST_INIT} {stage}" in INITTAB
        assert f"    {stage}) " in script
    assert "::shutdown:" in INITTAB and "::sysinit:" in INITTAB


@needs_busybox
def test_init_script_parses_with_busybox_sh(tmp_path: Path) -> None:
    script = tmp_path / "init.sh"
    script.write_text(init_script())
    subprocess.run(["busybox", "sh", "-n", str(script)], check=True, timeout=30)


@pytest.mark.parametrize(("args", "action"), [
    (["-h", "-P", "+0", "hypervisor initiated shutdown"], "poweroff"),  # qemu-ga guest-shutdown
    (["-r", "+0", "hypervisor initiated reboot"], "reboot"),
    (["-H", "+0"], "halt"),
    ([], "poweroff"),
])
def test_shutdown_script(tmp_path: Path, args: list[str], action: str) -> None:
    fake = tmp_path / "busybox"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    script = tmp_path / "shutdown"
    script.write_text(SHUTDOWN_SCRIPT.replace("/bin/busybox", str(fake)))
    proc = subprocess.run(["sh", str(script), *args], capture_output=True, text=True, check=True, timeout=30)
    assert proc.stdout.strip() == action


# -- the payload: wrapper, dependency walk, entries, hash -------------------------------------


def test_wrapper_script() -> None:
    text = wrapper_script()
    assert text.startswith("#!/bin/sh\n")
    assert 'PYTHONPATH="/opt/nestor/lib' in text
    assert 'exec /usr/bin/python3 -m nestor "$@"' in text
    assert "NESTOR_HOME" in text and "PYTHONDONTWRITEBYTECODE=1" in text


def test_wrapper_script_runs_nestor_from_lib(tmp_path: Path) -> None:
    """The wrapper, pointed at a local lib, runs `python3 -m nestor` with the arguments."""
    lib = tmp_path / "lib" / "nestor"
    lib.mkdir(parents=True)
    (lib / "__init__.py").write_text("")
    (lib / "__main__.py").write_text("import os, sys; print(sys.argv[1:], os.environ['NESTOR_HOME'])\n")
    python = shutil.which("python3")
    assert python is not None
    text = wrapper_script().replace("/opt/nestor/lib", str(tmp_path / "lib")).replace("/usr/bin/python3", python)
    script = tmp_path / "nestor"
    script.write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("NESTOR_HOME", "PYTHONPATH")}
    proc = subprocess.run(["sh", str(script), "vm", "list"], capture_output=True, text=True, env=env,
                          check=True, timeout=60)
    assert proc.stdout.strip() == "['vm', 'list'] /var/lib/nestor"


@pytest.mark.parametrize(("requirement", "expected"), [
    ("rich", ("rich", "")),
    ("qemu.qmp>=0.0.3", ("qemu.qmp", "")),
    ("markdown-it-py (>=2.2.0)", ("markdown-it-py", "")),
    ('pygments (>=2.13.0,<3.0.0)', ("pygments", "")),
    ('win_inet_pton; platform_system == "Windows"', ("win_inet_pton", 'platform_system == "Windows"')),
    ('pytest ; extra == "testing"', ("pytest", 'extra == "testing"')),
    ("", ("", "")),
])
def test_parse_requirement(requirement: str, expected: tuple[str, str]) -> None:
    assert parse_requirement(requirement) == expected


def test_dependency_closure_on_the_real_venv() -> None:
    names = {normalize(d.metadata["Name"]) for d in dependency_closure(DEPENDENCIES)}
    assert {"qemu-qmp", "pyroute2", "click", "rich", "markdown-it-py", "mdurl", "pygments"} <= names
    # Only runtime requirements: no extras, no test tools, nothing for Windows.
    assert not names & {"pytest", "mypy", "ruff", "pip", "setuptools", "colorama", "win-inet-pton", "nestor"}


def test_dependency_closure_missing_root_is_an_image_error() -> None:
    with pytest.raises(ImageError, match="not installed"):
        dependency_closure(["surely-not-installed-nestor-dep"])


def test_distribution_files_stay_inside_site_packages() -> None:
    (rich,) = [d for d in dependency_closure(["rich"]) if normalize(d.metadata["Name"]) == "rich"]
    files = dict(distribution_files(rich))
    assert "rich/__init__.py" in files and files["rich/__init__.py"].is_file()
    assert any(rel.endswith(".dist-info/METADATA") for rel in files)
    assert not any(".." in rel.split("/") or rel.endswith(".pyc") or "__pycache__" in rel for rel in files)


def test_installed_nestor_is_the_imported_package() -> None:
    """The running nestor's distribution (editable here: its RECORD names only a finder, so the
    imported package's files are carried) with its runtime requirements."""
    import nestor

    installed = installed_nestor()
    files = dict(installed.files)
    assert files["nestor/__init__.py"].resolve() == Path(nestor.__file__).resolve()
    assert "nestor/images/nested_host_init.sh" in files
    assert not any("__pycache__" in rel or rel.endswith(".pyc") for rel in files)
    assert "Name: nestor" in installed.metadata
    assert any(r.startswith("click") for r in installed.requires)


def test_installed_nestor_needs_a_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    from nestor.images import payload

    monkeypatch.setattr(payload, "DISTRIBUTION", "surely-not-installed-nestor")
    with pytest.raises(ImageError, match="not installed as a distribution") as err:
        installed_nestor()
    assert err.value.hint and "pip install nestor" in err.value.hint


def test_running_payload_is_the_mounted_payload_disk() -> None:
    mounts = ("/dev/vda / ext4 rw,relatime 0 0\n"
              "/dev/vdb /opt/nestor ext4 ro,relatime 0 0\n")
    inside = Path("/opt/nestor/lib/nestor")
    assert running_payload(mounts, inside) == Path("/dev/vdb")
    assert running_payload(mounts, Path("/work/src/nestor")) is None  # not running from a payload
    assert running_payload("/dev/vdb /opt/nestor ext4 rw 0 0\n", inside) is None  # not a payload: writable
    assert running_payload("", inside) is None
    assert running_payload() is None  # this test runs from a checkout


def test_payload_entries_for_the_installed_nestor(tmp_path: Path) -> None:
    image = make_appliance(tmp_path / "images")
    entries = payload_entries(installed_nestor(), image)
    dests = {e.dest for e in entries}
    assert "bin/nestor" in dests
    assert "lib/nestor/__init__.py" in dests and "lib/nestor/__main__.py" in dests
    assert "lib/nestor/images/nested_host_init.sh" in dests
    assert "lib/nestor/images/appliance_init.sh" in dests
    for dep in ("lib/rich/__init__.py", "lib/click/__init__.py", "lib/mdurl/__init__.py",
                "lib/markdown_it/__init__.py", "lib/pygments/__init__.py", "lib/qemu/qmp/__init__.py",
                "lib/pyroute2/__init__.py"):
        assert dep in dests, dep
    assert not any("__pycache__" in d or d.endswith(".pyc") for d in dests)
    assert not any(d.startswith("lib/pytest") or d.startswith("lib/_pytest") for d in dests)
    assert {"images/kernel/manifest.json", "images/kernel/vmlinux", "images/appliance/manifest.json",
            "images/appliance/initrd.img", f"images/kernel/lib/modules/{VERSION}/modules.dep"} <= dests
    assert not any(d.endswith(".ko") for d in dests)  # L2's appliance carries its own modules
    assert [e.dest for e in entries] == sorted(dests)
    (wrapper,) = [e for e in entries if e.dest == "bin/nestor"]
    assert wrapper.mode == 0o755 and wrapper.text == wrapper_script()


def test_payload_entries_need_package_files(tmp_path: Path) -> None:
    image = make_appliance(tmp_path / "images")
    with pytest.raises(ImageError, match="no package files"):
        payload_entries(Installed("nestor", "1", "", ()), image)


def test_payload_carries_a_distribution_the_guest_finds(tmp_path: Path) -> None:
    """Inside the guest, the payload's lib is an installed nestor: importlib.metadata finds it,
    with its requirements and a RECORD listing its package files (what installed_nestor reads)."""
    import importlib.metadata as metadata

    image = make_appliance(tmp_path / "images")
    installed = make_installed(tmp_path / "site", ["mdurl"])
    tree = tmp_path / "tree"
    populate_payload(tree, payload_entries(installed, image))
    (dist,) = [d for d in metadata.distributions(path=[str(tree / "lib")]) if d.metadata["Name"] == "nestor"]
    assert dist.metadata["Name"] == "nestor" and dist.version == "9.9"
    assert dist.requires == ["mdurl"]
    recorded = {f.as_posix() for f in dist.files or []}
    assert {"nestor/__init__.py", "nestor/__main__.py", "nestor/images/x_init.sh"} <= recorded
    assert all(Path(str(dist.locate_file(f))).is_file() for f in dist.files or [])


def test_payload_names_the_nested_host_image_by_the_guest_rootfs_disk(tmp_path: Path) -> None:
    """A built nested-host image puts its manifest in the payload and its rootfs as a link to
    the guest's read-only disk /dev/vdc: the nested host's own nested-host image."""
    images = tmp_path / "images"
    image = make_appliance(images)
    installed = make_installed(tmp_path / "site", ["mdurl"])
    without = payload_entries(installed, image, images)
    assert not any(e.dest.startswith("images/nested-host/") for e in without)
    make_nested_host(images)
    entries = payload_entries(installed, image, images)
    host = {e.dest: e for e in entries if e.dest.startswith("images/nested-host/")}
    (link,) = [e for e in host.values() if e.link is not None]
    assert link.link == "/dev/vdc" and link.dest.endswith(".img") and "/rootfs-" in link.dest
    assert "images/nested-host/manifest.json" in host
    assert payload_hash(entries) != payload_hash(without)
    tree = tmp_path / "tree"
    populate_payload(tree, entries)
    assert os.readlink(tree / link.dest) == "/dev/vdc"


def test_payload_layout_is_loadable_by_load_appliance(tmp_path: Path) -> None:
    """What `load_appliance(Path('/opt/nestor/images'))` sees inside L1."""
    image = make_appliance(tmp_path / "images")
    installed = make_installed(tmp_path / "site", ["mdurl"])
    tree = tmp_path / "tree"
    populate_payload(tree, payload_entries(installed, image))
    inside = appliance.load_appliance(tree / "images")
    assert inside is not None
    assert inside.kernel.version == VERSION
    assert inside.kernel.vmlinux.read_bytes() == image.kernel.vmlinux.read_bytes()
    assert inside.initrd.read_bytes() == image.initrd.read_bytes()
    assert os.access(tree / "bin" / "nestor", os.X_OK)
    assert (tree / "lib" / "mdurl" / "__init__.py").is_file()
    assert not (tree / "lib" / "nestor" / "__pycache__").exists()


def test_payload_hash_tracks_content_and_modes(tmp_path: Path) -> None:
    a = tmp_path / "a.py"
    a.write_text("x = 1\n")
    entries = [Entry("lib/a.py", source=a), Entry("bin/nestor", text="#!/bin/sh\n", mode=0o755)]
    first = payload_hash(entries)
    assert first == payload_hash(list(entries))
    a.write_text("x = 2\n")
    second = payload_hash(entries)
    assert second != first
    assert payload_hash([entries[0], Entry("bin/nestor", text="#!/bin/sh\n", mode=0o644)]) != second
    assert payload_hash([entries[0], Entry("bin/nestor", text="#!/bin/sh\n\n", mode=0o755)]) != second
    assert payload_hash([Entry("lib/b.py", source=a), entries[1]]) != second


def test_prune_payloads_keeps_the_most_recently_used(tmp_path: Path) -> None:
    now = time.time()
    for age, name in enumerate(("newest", "middle", "old", "oldest")):
        path = tmp_path / f"{name}.img"
        path.write_bytes(b"")
        os.utime(path, (now - age * 10, now - age * 10))
    removed = prune_payloads(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == ["old.img", "oldest.img"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["middle.img", "newest.img"]


def debugfs_ls(image: Path, path: str) -> str:
    proc = subprocess.run(["debugfs", "-R", f"ls -l {path}", str(image)], capture_output=True, text=True,
                          check=True, timeout=60)
    return proc.stdout


@needs_mkfs
def test_build_payload_builds_caches_and_rebuilds(tmp_path: Path) -> None:
    images = tmp_path / "images"
    make_appliance(images)
    installed = make_installed(tmp_path / "site", ["mdurl"])
    lines: list[str] = []
    first = build_payload(images, lines.append, installed)
    assert first.parent == images / "payload" and first.suffix == ".img"
    assert any("mkfs.ext4" in line for line in lines)
    assert "nestor" in debugfs_ls(first, "/bin")
    assert "mdurl" in debugfs_ls(first, "/lib")
    assert "__pycache__" in debugfs_ls(first, "/lib/mdurl")  # precompiled: the disk is read-only
    assert "initrd.img" in debugfs_ls(first, "/images/appliance")
    assert "has_journal" not in subprocess.run(["dumpe2fs", "-h", str(first)], capture_output=True, text=True,
                                               timeout=60).stdout

    lines.clear()
    started = time.monotonic()
    assert build_payload(images, lines.append, installed) == first
    assert time.monotonic() - started < 5
    assert any("payload: cached" in line for line in lines)

    (tmp_path / "site" / "nestor" / "__main__.py").write_text("print('changed')\n")
    second = build_payload(images, lines.append, installed)
    assert second != first and second.is_file() and first.is_file()
    assert not list((images / "payload").glob(".payload-build-*"))
