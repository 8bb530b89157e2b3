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
