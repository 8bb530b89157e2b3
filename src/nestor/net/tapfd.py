"""A tap's file descriptor, opened by root and handed to QEMU (`-netdev tap,fd=N`), as libvirt does.

The taps stay root's (no TUNSETOWNER): QEMU, which runs as the shared QEMU user, never opens a
tap by name, so an escaped QEMU cannot attach to another VM's tap (a stopped VM's, or one nestor
has just made). The descriptor is opened in the tap's network namespace: /dev/net/tun looks the
name up in the namespace it was opened in, so a short-lived thread enters the namespace (setns
affects only the calling thread), opens it, and ends.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
import threading

from ..errors import HostError

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000  # what QEMU asks for when it opens a tap itself (offloads, virtio-net headers)
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"


def _open_here(ifname: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", ifname.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
    except OSError:
        os.close(fd)
        raise
    return fd


def _setns(netns: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    nsfd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(nsfd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(nsfd)


def open_tap(ifname: str, netns: str | None) -> int:
    """An open descriptor attached to the existing tap ``ifname`` (in ``netns``); close-on-exec
    (``subprocess``'s ``pass_fds`` hands it to QEMU)."""
    if "/" in ifname or len(ifname.encode()) > 15:
        raise HostError(f"invalid tap name {ifname!r}")
    result: dict[str, int | BaseException] = {}

    def work() -> None:
        try:
            if netns is not None:
                _setns(netns)
            result["fd"] = _open_here(ifname)
        except BaseException as exc:  # reported to the caller below
            result["error"] = exc

    if netns is None:
        work()
    else:
        if "/" in netns or netns in ("", ".", ".."):
            raise HostError(f"invalid network namespace name {netns!r}")
        thread = threading.Thread(target=work, name=f"tapfd-{ifname}")
        thread.start()
        thread.join()
    error = result.get("error")
    if isinstance(error, BaseException):
        raise HostError(f"cannot open tap {ifname}: {error}", hint="is the tun module loaded? (modprobe tun)") from error
    fd = result["fd"]
    assert isinstance(fd, int)
    return fd
