"""Unit tests for nestor.images.appliance: no QEMU, no network, no apt."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nestor.errors import ImageError
from nestor.images import appliance, contract, packages, publish
from nestor.images.appliance import (
    BOOT_LINE,
    ApplianceImage,
    KernelImage,
    NewcWriter,
    cmdline_params,
    copy_modules,
    decompress_vmlinuz,
    elf_is_complete,
    elf_is_static,
    find_lz4_payloads,
    load_appliance,
    load_kernel,
    make_run_cpio,
    module_name,
    parse_depends,
    parse_modules_dep,
    resolve_modules,
    write_newc,
)

needs_lz4 = pytest.mark.skipif(shutil.which("lz4") is None, reason="lz4 not installed")
needs_cpio = pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio not installed")

VERSION = "6.1.0-99-cloud-amd64"


def fake_elf(payload_size: int = 4096) -> bytes:
    """A minimal 64-bit little-endian ELF with one PT_LOAD segment covering the payload."""
    ehdr = bytearray(64)
    ehdr[:4] = b"\x7fELF"
    ehdr[4] = 2  # 64-bit
    ehdr[5] = 1  # little endian
    ehdr[6] = 1
    struct.pack_into("<Q", ehdr, 32, 64)  # e_phoff
    struct.pack_into("<HH", ehdr, 54, 56, 1)  # e_phentsize, e_phnum
    phdr = bytearray(56)
    struct.pack_into("<IIQ", phdr, 0, 1, 5, 120)  # PT_LOAD, flags, p_offset
    struct.pack_into("<Q", phdr, 32, payload_size)  # p_filesz
    body = bytes((i * 7) % 251 for i in range(payload_size))
    return bytes(ehdr) + bytes(phdr) + body


def lz4_legacy(data: bytes) -> bytes:
    proc = subprocess.run(["lz4", "-l", "-c"], input=data, capture_output=True, check=True, timeout=60)
    return proc.stdout


# -- LZ4 payload extraction -------------------------------------------------------------------


def test_find_lz4_payloads_lists_every_magic() -> None:
    data = b"xx\x02\x21\x4c\x18yy\x02\x21\x4c\x18"
    assert list(find_lz4_payloads(data)) == [2, 8]
    assert list(find_lz4_payloads(b"nothing here")) == []


@needs_lz4
def test_decompress_vmlinuz_finds_payload_behind_setup_code(tmp_path: Path) -> None:
    elf = fake_elf()
    # A fake magic in the "setup code" first, garbage after the stream (like a bzImage).
    bzimage = (
        b"MZ"
        + b"\0" * 500
        + b"\x02\x21\x4c\x18junk"
        + b"\x90" * 300
        + lz4_legacy(elf)
        + struct.pack("<I", len(elf))
        + b"\xff" * 64
    )
    vmlinuz = tmp_path / "vmlinuz"
    vmlinuz.write_bytes(bzimage)
    out = tmp_path / "vmlinux"
    decompress_vmlinuz(vmlinuz, out)
    assert out.read_bytes() == elf


@needs_lz4
def test_decompress_vmlinuz_without_payload_raises(tmp_path: Path) -> None:
    vmlinuz = tmp_path / "vmlinuz"
    vmlinuz.write_bytes(b"MZ" + b"\0" * 1000)
    with pytest.raises(ImageError) as err:
        decompress_vmlinuz(vmlinuz, tmp_path / "vmlinux")
    assert "vmlinuz" in err.value.message
    assert not (tmp_path / "vmlinux").exists()


def test_elf_is_complete_detects_truncation(tmp_path: Path) -> None:
    path = tmp_path / "elf"
    path.write_bytes(fake_elf())
    assert elf_is_complete(path)
    path.write_bytes(fake_elf()[:1000])
    assert not elf_is_complete(path)
    path.write_bytes(b"not an elf at all" * 10)
    assert not elf_is_complete(path)


def test_elf_is_static(tmp_path: Path) -> None:
    path = tmp_path / "elf"
    path.write_bytes(fake_elf())
    assert elf_is_static(path)
    real_python = Path(os.path.realpath(sys.executable))
    proc = (
        subprocess.run(["file", "-L", str(real_python)], capture_output=True, text=True, check=False)
        if shutil.which("file")
        else None
    )
    if proc is not None and "dynamically linked" in proc.stdout:
        assert not elf_is_static(real_python)


# -- cpio ---------------------------------------------------------------------------------------


def cpio_list(archive: Path, verbose: bool = False) -> list[str]:
    flags = "-tv" if verbose else "-t"
    with archive.open("rb") as source:
        proc = subprocess.run(["cpio", flags], stdin=source, capture_output=True, text=True, check=True, timeout=60)
    return proc.stdout.splitlines()


@needs_cpio
def test_make_run_cpio_is_a_valid_newc_archive(tmp_path: Path) -> None:
    script = tmp_path / "user.sh"
    script.write_text("echo hello-from-run\n")
    out = tmp_path / "run.cpio"
    make_run_cpio(script, out)
    data = out.read_bytes()
    assert data.startswith(b"070701")
    assert len(data) % 512 == 0  # so another archive may follow it
    assert cpio_list(out) == ["nestor", "nestor/run.sh"]
    listing = cpio_list(out, verbose=True)
    assert listing[1].startswith("-rwxr-xr-x")
    extract = tmp_path / "x"
    extract.mkdir()
    with out.open("rb") as source:
        subprocess.run(["cpio", "-i", "-d", "--quiet"], stdin=source, cwd=extract, check=True, timeout=60)
    run = extract / "nestor" / "run.sh"
    assert run.read_text() == "echo hello-from-run\n"
    assert run.stat().st_mode & 0o777 == 0o755


def test_make_run_cpio_missing_script(tmp_path: Path) -> None:
    with pytest.raises(ImageError):
        make_run_cpio(tmp_path / "absent.sh", tmp_path / "run.cpio")
    assert not (tmp_path / "run.cpio").exists()


def test_newc_entries_are_four_byte_aligned() -> None:
    writer = NewcWriter()
    writer.directory("a")
    writer.file("a/odd", b"xyz", 0o600)
    data = writer.finish()
    # Every header starts on a 4-byte boundary.
    offsets = [i for i in range(len(data)) if data.startswith(b"070701", i)]
    assert len(offsets) == 3
    assert all(offset % 4 == 0 for offset in offsets)
    assert b"TRAILER!!!" in data


@needs_cpio
def test_write_newc_tree_with_symlink_and_console(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(b"\x7fELF fake")
    (root / "bin" / "sh").symlink_to("/bin/busybox")
    (root / "init").write_text("#!/bin/busybox sh\n")
    out = tmp_path / "initrd.img"
    write_newc(root, out)
    listing = cpio_list(out, verbose=True)
    names = [line.split()[-1] if "->" not in line else line.split()[-3] for line in listing]
    assert {"bin", "bin/busybox", "bin/sh", "init", "dev/console", "dev/null"} <= set(names)
    console = next(line for line in listing if line.endswith("dev/console"))
    assert console.startswith("c")
    assert any("bin/sh -> /bin/busybox" in line for line in listing)


@needs_cpio
def test_initrd_and_run_cpio_concatenate(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "init").write_text("x")
    initrd = tmp_path / "initrd.img"
    write_newc(root, initrd)
    script = tmp_path / "s.sh"
    script.write_text("true\n")
    run = tmp_path / "run.cpio"
    make_run_cpio(script, run)
    combined = initrd.read_bytes() + run.read_bytes()
    # The kernel resumes after the first trailer at the next 4-aligned "070701".
    second = combined.index(b"070701", len(initrd.read_bytes()))
    assert second == len(initrd.read_bytes())
    assert second % 4 == 0


# -- kernel command line ----------------------------------------------------------------------


def test_cmdline_params_static() -> None:
    assert cmdline_params(hostname="web", ip="10.0.2.15/24", gw="10.0.2.2", dns="10.0.2.3") == [
        "nestor.hostname=web",
        "nestor.ip=10.0.2.15/24",
        "nestor.gw=10.0.2.2",
        "nestor.dns=10.0.2.3",
    ]


def test_cmdline_params_dhcp_and_root() -> None:
    assert cmdline_params(dhcp=True) == ["nestor.dhcp=1"]
    assert cmdline_params() == []
    assert cmdline_params(root="/dev/vda") == ["nestor.root=/dev/vda"]
    # A static address wins over DHCP.
    assert "nestor.dhcp=1" not in cmdline_params(ip="10.0.0.2/24", dhcp=True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hostname": "two words"},
        {"hostname": ""},
        {"ip": "10.0.0.1"},
        {"dns": 'a"b'},
    ],
)
def test_cmdline_params_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        cmdline_params(**kwargs)


# -- apt ----------------------------------------------------------------------------------------


APT_CACHE_DEPENDS = """\
linux-image-cloud-amd64
  Depends: linux-image-6.1.0-28-cloud-amd64
  Recommends: firmware-linux-free
"""


def test_parse_depends() -> None:
    assert parse_depends(APT_CACHE_DEPENDS) == "linux-image-6.1.0-28-cloud-amd64"
    assert parse_depends("") is None
    assert parse_depends("W: Unable to locate package linux-image-cloud-amd64") is None


class FakeRun:
    """Replaces appliance._run: answers from a script of CompletedProcess results."""

    def __init__(self, answers: list[tuple[int, str, str]]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(
        self, argv: list[str], timeout: float, cwd: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        assert timeout > 0
        if argv[:2] == ["apt-get", "update"]:
            return subprocess.CompletedProcess(argv, 0, "", "")
        code, out, err = self.answers.pop(0)
        if check and code != 0:
            raise ImageError("failed")
        return subprocess.CompletedProcess(argv, code, out, err)


def test_resolve_kernel_package_updates_lists_once(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRun([(0, "linux-image-cloud-amd64\n", ""), (0, APT_CACHE_DEPENDS, "")])
    monkeypatch.setattr(packages, "run", fake)
    lines: list[str] = []
    assert appliance.resolve_kernel_package(lines.append) == "linux-image-6.1.0-28-cloud-amd64"
    assert ["apt-get", "update"] in fake.calls
    assert any("apt-get update" in line for line in lines)


def test_resolve_kernel_package_fails_with_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRun([(100, "", "E: No packages found"), (100, "", "E: No packages found")])
    monkeypatch.setattr(packages, "run", fake)
    with pytest.raises(ImageError) as err:
        appliance.resolve_kernel_package(lambda _line: None)
    assert "linux-image-cloud-amd64" in err.value.message
    assert err.value.hint is not None and "apt-get update" in err.value.hint


def test_apt_download_failure_names_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = FakeRun([(100, "", "E: Unable to locate package foo"), (100, "", "E: Unable to locate package foo")])
    monkeypatch.setattr(packages, "run", fake)
    with pytest.raises(ImageError) as err:
        appliance.apt_download("foo", tmp_path, lambda _line: None)
    assert "foo" in err.value.message
    assert err.value.hint is not None and "apt" in err.value.hint
    assert all("shell" not in str(call) for call in fake.calls)


# -- modules ------------------------------------------------------------------------------------


MODULES_DEP = """\
kernel/arch/x86/kvm/kvm.ko: kernel/virt/lib/irqbypass.ko
kernel/arch/x86/kvm/kvm-amd.ko: kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko
kernel/virt/lib/irqbypass.ko:
kernel/net/bridge/bridge.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko
kernel/net/802/stp.ko: kernel/net/llc/llc.ko
kernel/net/llc/llc.ko:
kernel/net/netfilter/nft_masq.ko.xz: kernel/net/netfilter/nf_tables.ko
kernel/net/netfilter/nf_tables.ko:
kernel/sound/snd.ko:
"""


def test_module_name() -> None:
    assert module_name("kernel/arch/x86/kvm/kvm-amd.ko") == "kvm_amd"
    assert module_name("kernel/net/netfilter/nft_masq.ko.xz") == "nft_masq"
    assert module_name("virtio_net.ko.zst") == "virtio_net"


def test_resolve_modules_follows_dependencies_and_globs() -> None:
    deps = parse_modules_dep(MODULES_DEP)
    chosen = resolve_modules(deps, ["kvm_amd", "bridge", "nft_*", "absent_module"])
    assert "kernel/sound/snd.ko" not in chosen
    assert set(chosen) == {
        "kernel/arch/x86/kvm/kvm.ko",
        "kernel/arch/x86/kvm/kvm-amd.ko",
        "kernel/virt/lib/irqbypass.ko",
        "kernel/net/bridge/bridge.ko",
        "kernel/net/802/stp.ko",
        "kernel/net/llc/llc.ko",
        "kernel/net/netfilter/nft_masq.ko.xz",
        "kernel/net/netfilter/nf_tables.ko",
    }


def make_kernel_tree(images_dir: Path, version: str = VERSION) -> KernelImage:
    top = images_dir / "kernel"
    modules = top / "lib" / "modules" / version
    deps = parse_modules_dep(MODULES_DEP)
    for relpath in deps:
        path = modules / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"module " + relpath.encode())
    (modules / "modules.dep").write_text(MODULES_DEP)
    (modules / "modules.builtin").write_text("kernel/fs/ext4/ext4.ko\n")
    (modules / "modules.alias").write_text("alias nft-expr-masq nft_masq\nalias sound-service-? snd\n")
    (top / "vmlinux").write_bytes(fake_elf())
    (top / "manifest.json").write_text(json.dumps({"format": 1, "version": version}))
    kernel = load_kernel(images_dir)
    assert kernel is not None
    return kernel


def test_copy_modules_writes_plain_modules_and_dep(tmp_path: Path) -> None:
    if shutil.which("xz") is None:
        pytest.skip("xz not installed")
    kernel = make_kernel_tree(tmp_path / "images")
    xz_module = kernel.modules_dir / "kernel/net/netfilter/nft_masq.ko.xz"
    packed = subprocess.run(["xz", "-z", "-c"], input=b"the masq module", capture_output=True, check=True, timeout=60)
    xz_module.write_bytes(packed.stdout)
    dest = tmp_path / "stage" / "lib" / "modules" / VERSION
    dest.mkdir(parents=True)
    copy_modules(kernel, dest, ["kvm_amd", "nft_masq"])
    assert (dest / "kernel/net/netfilter/nft_masq.ko").read_bytes() == b"the masq module"
    assert not (dest / "kernel/sound/snd.ko").exists()
    dep = (dest / "modules.dep").read_text()
    assert "kernel/net/netfilter/nft_masq.ko: kernel/net/netfilter/nf_tables.ko" in dep
    assert "kernel/virt/lib/irqbypass.ko:\n" in dep
    assert ".xz" not in dep
    assert (dest / "modules.alias").read_text() == "alias nft-expr-masq nft_masq\n"
    assert (dest / "modules.builtin").is_file()


# -- cache and layout ---------------------------------------------------------------------------


def write_appliance_manifest(top: Path, kernel_version: str = VERSION, recipe: str | None = None) -> None:
    manifest = {"format": 1, "kernel_version": kernel_version, "recipe": recipe or appliance.appliance_recipe()}
    (top / "manifest.json").write_text(json.dumps(manifest))


def test_load_returns_none_when_not_built(tmp_path: Path) -> None:
    assert load_kernel(tmp_path) is None
    assert load_appliance(tmp_path) is None


def test_load_appliance_checks_kernel_version(tmp_path: Path) -> None:
    kernel = make_kernel_tree(tmp_path)
    top = tmp_path / "appliance"
    top.mkdir()
    (top / "initrd.img").write_bytes(b"070701")
    write_appliance_manifest(top)
    assert load_appliance(tmp_path) == ApplianceImage(kernel=kernel, initrd=top / "initrd.img")
    write_appliance_manifest(top, kernel_version="5.10.0-1")
    assert load_appliance(tmp_path) is None
    write_appliance_manifest(top, recipe="made-by-older-code")
    assert load_appliance(tmp_path) is None


def test_build_appliance_reuses_cache_without_subprocesses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_kernel_tree(tmp_path)
    top = tmp_path / "appliance"
    top.mkdir()
    (top / "initrd.img").write_bytes(b"070701")
    write_appliance_manifest(top)

    def no_subprocess(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a cached build must not run anything")

    monkeypatch.setattr(packages, "run", no_subprocess)
    monkeypatch.setattr(subprocess, "run", no_subprocess)
    lines: list[str] = []
    image = appliance.build_appliance(tmp_path, lines.append)
    assert image.initrd == top / "initrd.img"
    assert any("cached" in line for line in lines)


def test_publish_replaces_old_tree(tmp_path: Path) -> None:
    final = tmp_path / "kernel"
    final.mkdir()
    (final / "old").write_text("old")
    stage = tmp_path / ".kernel-build-1-x"
    stage.mkdir()
    (stage / "new").write_text("new")
    publish.publish(stage, final)
    assert (final / "new").is_file()
    assert not (final / "old").exists()
    assert not stage.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["kernel"]


def test_staging_removes_dead_leftovers(tmp_path: Path) -> None:
    dead = tmp_path / ".kernel-build-999999999-abc"
    dead.mkdir()
    with publish.Staging(tmp_path, "kernel") as stage:
        assert stage.is_dir()
        assert not dead.exists()
    assert not stage.exists()


# -- init script --------------------------------------------------------------------------------


def test_init_script_is_shipped_and_prints_boot_line() -> None:
    text = appliance.init_script()
    assert text.startswith("#!/bin/busybox sh\n")
    assert 'BOOT_LINE="$APPLIANCE_BOOT_LINE"' in text  # from the contract it sources
    assert ". /etc/nestor/contract.sh" in text and '. "$GUEST_LIB"' in text
    assert f"APPLIANCE_BOOT_LINE='{BOOT_LINE}'" in contract.shell_fragment()
    for var in ("CMDLINE_hostname", "CMDLINE_root"):
        assert var in text
    assert "switch_root /newroot /sbin/init" in text


@pytest.mark.parametrize("shell", ["busybox", "dash", "sh"])
def test_init_script_syntax(shell: str, tmp_path: Path) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} not installed")
    script = tmp_path / "init"
    script.write_text(appliance.init_script())
    argv = [shell, "sh", "-n", str(script)] if shell == "busybox" else [shell, "-n", str(script)]
    subprocess.run(argv, check=True, timeout=30)


def test_inittab_runs_the_stages() -> None:
    assert "::sysinit:/init sysinit" in appliance.INITTAB
    assert "::once:/init run" in appliance.INITTAB
    assert "::respawn:/init console" in appliance.INITTAB
    assert "::shutdown:/init shutdown" in appliance.INITTAB
