"""Shared fixtures: a cached image store, nestor homes whose QEMUs are always reaped."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import CACHE, reap_home


@pytest.fixture(scope="session")
def image_store() -> Path:
    """The cached images directory, with the appliance built (once per machine)."""
    if os.geteuid() != 0 or shutil.which("qemu-system-x86_64") is None:
        pytest.skip("VM tests need root and qemu-system-x86 (scripts/setup installs it)")
    from nestor.images import appliance

    images = CACHE / "images"
    images.mkdir(parents=True, exist_ok=True)
    appliance.build_appliance(images, lambda line: print(f"[image] {line}", file=sys.stderr))
    return images


@pytest.fixture
def home(tmp_path: Path, image_store: Path) -> Iterator[Path]:
    """A fresh nestor home sharing the cached images; every QEMU it started is reaped."""
    root = tmp_path / "home"
    root.mkdir()
    (root / "images").symlink_to(image_store)
    try:
        yield root
    finally:
        reap_home(root)


