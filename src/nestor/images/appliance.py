"""The appliance image under its former module name: the kernel (kernel.py), the busybox
initramfs (initramfs.py), the Debian package fetching (packages.py) and the contract's kernel
parameters (contract.py). New code imports those modules; this one keeps older imports working."""

from __future__ import annotations

from .contract import cmdline_params as cmdline_params
from .cpio import NewcWriter as NewcWriter
from .cpio import write_newc as write_newc
from .initramfs import *  # noqa: F403
from .kernel import *  # noqa: F403
from .packages import apt_download as apt_download
from .packages import parse_depends as parse_depends
from .packages import resolve_kernel_package as resolve_kernel_package
