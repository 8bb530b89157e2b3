from pathlib import Path

import pytest

from nestor.errors import InvalidInput
from nestor.model import format_size, parse_size, validate_config_version, validate_name


@pytest.mark.parametrize("name", ["a", "web1", "l1", "a-b-c", "x" * 32])
def test_good_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "a/b", "..", ".", "a b", "x" * 33, "-a", "a-", "A", "a_b", "é"])
def test_bad_names(name: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_name(name)
    assert "\n" not in info.value.message and info.value.hint


@pytest.mark.parametrize(("text", "size"), [("512M", 512 << 20), ("2G", 2 << 30), ("1024", 1 << 30),
                                            ("64MiB", 64 << 20), ("1g", 1 << 30)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["abc", "0", "-1G", "", "1.5G", "12X", "0M"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_size(text)


def test_format_size() -> None:
    assert format_size(512 << 20) == "512M" and format_size(2 << 30) == "2G"


def test_config_versions() -> None:
    assert validate_config_version("11.0") == "11.0"
    with pytest.raises(InvalidInput):
        validate_config_version("12.5")


@pytest.mark.parametrize("name", ["web\n", "\nweb", "we\nb", "web\r", "web\x00", "web\t", "web\x1b[31m"])
def test_names_are_full_matches(name: str) -> None:
    """`$` in a regex matches before a final newline: `re.fullmatch` does not let "web\\n" in."""
    for what in ("vm", "switch", "adapter", "nat"):
        with pytest.raises(InvalidInput) as info:
            validate_name(name, what)
        assert "\n" not in info.value.message and "\x1b" not in info.value.message


@pytest.mark.parametrize(("text", "size"), [("512B", 512), ("512b", 512), ("1K", 1 << 10), ("1000K", 1000 << 10),
                                            ("1", 1 << 20), ("2GB", 2 << 30), (" 3 M ", 3 << 20)])
def test_size_units(text: str, size: int) -> None:
    assert parse_size(text) == size  # 512B is bytes (it was read as 512 MiB)


@pytest.mark.parametrize("text", ["²", "1²", "٣M", "1e3", "0x10", "1KB5", "M", "1 K B", "9" * 16, "1\n", "512BB"])
def test_sizes_refused_cleanly(text: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_size(text)
    assert "\n" not in info.value.message


def test_text_and_netns() -> None:
    from nestor.model import MAX_APPEND, validate_netns, validate_text

    assert validate_text("console=ttyS0 quiet", "--append", MAX_APPEND)
    for bad in ("a\nb", "x\x1b", "init=/bin/sh\x00", "y" * (MAX_APPEND + 1)):
        with pytest.raises(InvalidInput):
            validate_text(bad, "--append", MAX_APPEND)
    assert validate_netns("nt-ab12.c_d") == "nt-ab12.c_d"
    for bad in ("", ".", "..", "a/b", "ns\n", "-x", "a b", "x" * 65, "ns,x"):
        with pytest.raises(InvalidInput):
            validate_netns(bad)


def test_home_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nestor import paths

    monkeypatch.chdir(tmp_path)
    assert paths.check_home("rel/home") == tmp_path / "rel" / "home"  # relative: made absolute
    assert paths.check_home("/var/lib/nestor") == Path("/var/lib/nestor")
    for bad, why in (("", "empty"), ("/tmp/a,b", "','"), ("/tmp/a\nb", "control"),
                     ("/" + "x" * paths.max_home_bytes(), "too long")):
        with pytest.raises(InvalidInput, match=why):
            paths.check_home(bad)
    longest = "/" + "x" * (paths.max_home_bytes() - 1)
    sock = f"{longest}/vms/{'9' * paths.MAX_VM_ID_DIGITS}/{paths.SERIAL_SOCK}"
    assert len(sock.encode()) <= paths.SUN_PATH_MAX == 107


def test_table_cells_are_not_markup(capsys: pytest.CaptureFixture[str]) -> None:
    from nestor.cli.output import table

    table([{"name": "a", "image": "/tmp/[/]x[bold]y\x1b[2J"}], ["name", "image"])
    out = capsys.readouterr().out
    assert "/tmp/[/]x[bold]y\\x1b[2J" in out and "\x1b" not in out  # escaped as everywhere (cli/output.escape_controls)
