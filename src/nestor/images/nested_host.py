"""The nested-host image under its former module name: the root filesystem (rootfs.py), the L1
payload (payload.py), raw ext4 images (ext4.py) and mmdebstrap (packages.py). New code imports
those modules; this one keeps older imports working."""

from __future__ import annotations

from .ext4 import make_ext4 as make_ext4
from .packages import APT_OPTIONS as APT_OPTIONS
from .packages import DPKG_OPTIONS as DPKG_OPTIONS
from .packages import interesting_mmdebstrap_line as interesting_mmdebstrap_line
from .packages import mmdebstrap_error as mmdebstrap_error
from .packages import run_mmdebstrap as run_mmdebstrap
from .payload import *  # noqa: F403
from .rootfs import *  # noqa: F403
