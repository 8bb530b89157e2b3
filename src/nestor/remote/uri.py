"""Which libvirt URIs nestor accepts for `host add`. Pure.

A libvirt URI's query is not just options: several keys make libvirt, running here as root, run or
read things on this machine (`command=` and `netcat=` name a program to run, `keyfile=`, `pkipath=`,
`socket=` and `known_hosts=` name local files, `no_verify=1` and `known_hosts_verify=ignore` turn off
the checks of the other end, `tls_priority=` can weaken TLS, `name=` changes which driver the other
end opens). An API token holder must not get any of that through `POST /v1/hosts`, so the query is an
allow-list of keys that only shape the connection (QUERY_KEYS), each with its allowed values.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from ..errors import InvalidInput, NotFound

REMOTE_SCHEMES = ("qemu+ssh", "qemu+tcp", "qemu+tls")
EXAMPLES = "qemu+ssh://root@host-a/system, qemu+tls://host-b/system, test:///default or test:///ABSOLUTE/PATH.xml"

# The query keys a `host add` URI may carry, with their allowed values: `no_tty=1` (ssh must not ask
# for a password on a terminal), `mode=` (which daemon socket the other end connects to: the
# monolithic libvirtd or the modular virtqemud). Nothing that names a program, a file or a check.
QUERY_KEYS: dict[str, tuple[str, ...]] = {"no_tty": ("0", "1"), "mode": ("auto", "legacy", "direct")}
# A host name or address as ssh/libvirt take it: no leading '-' (ssh would read it as an option).
_HOST = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?|\[[0-9A-Fa-f:.]+\]")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


# A local qemu:/// URI may name the unix socket of a libvirt daemon of this machine (a private
# libvirtd, as the tests run): an absolute path to an existing socket whose name is libvirt's own.
_DAEMON_SOCKETS = ("libvirt-sock", "virtqemud-sock")


def _daemon_socket(value: str) -> bool:
    import stat

    path = Path(value)
    try:
        return (path.is_absolute() and ".." not in path.parts and path.name in _DAEMON_SOCKETS
                and stat.S_ISSOCK(path.lstat().st_mode))
    except OSError:
        return False


def _query(uri: str, query: str, fragment: str, local: bool = False) -> None:
    if fragment:
        raise InvalidInput(f"libvirt URI '{uri}' has a fragment ('#{fragment}')", hint="remove the '#…' part")
    if not query:
        return
    allowed = ", ".join(f"{key}={'|'.join(values)}" for key, values in QUERY_KEYS.items())
    seen: set[str] = set()
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise InvalidInput(f"libvirt URI '{uri}' has a malformed query '?{query}'",
                           hint=f"nestor accepts only {allowed}") from None
    for key, value in pairs:
        if local and key == "socket" and key not in seen and _daemon_socket(value):
            seen.add(key)
            continue
        if key not in QUERY_KEYS:
            raise InvalidInput(f"libvirt URI '{uri}': the query key '{key}' is not allowed (it could make libvirt "
                               "run a program or read a file on this machine, or skip a check)",
                               hint=f"nestor accepts only {allowed}; set ssh options in ~/.ssh/config instead")
        if value not in QUERY_KEYS[key] or key in seen:
            raise InvalidInput(f"libvirt URI '{uri}': '{key}={value}' is not allowed" +
                               (" twice" if key in seen else ""), hint=f"nestor accepts only {allowed}")
        seen.add(key)


def _authority(uri: str, netloc: str, hostname: str | None) -> None:
    authority = netloc.rpartition("@")[2]
    user = netloc.rpartition("@")[0] if "@" in netloc else None
    host, _, port = authority.rpartition(":") if not authority.endswith("]") else (authority, "", "")
    if not host:
        host, port = authority, ""
    if not hostname or not _HOST.fullmatch(host):
        raise InvalidInput(f"libvirt URI '{uri}' has an invalid host name '{host}'",
                           hint="a host name or address, e.g. qemu+ssh://root@host-a/system")
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise InvalidInput(f"libvirt URI '{uri}' has an invalid port '{port}'", hint="a port is 1 to 65535")
    if user is not None and not _USER.fullmatch(user):
        raise InvalidInput(f"libvirt URI '{uri}' has an invalid user name '{user}'",
                           hint="a user name only, no password (use ssh keys or ~/.ssh/config)")


def validate(uri: str) -> str:
    """The URI unchanged if nestor can use it; InvalidInput naming what is wrong otherwise (NotFound
    for a test:///PATH.xml that does not exist)."""
    checked = _validate(uri)
    if not _GRAMMAR_RE.fullmatch(uri) and not _local_socket(uri):
        raise InvalidInput(f"libvirt URI '{uri[:200]}' is not in the form nestor takes (no spaces or control "
                           "characters, a lower-case scheme, a query of key=value pairs, no '#')",
                           hint=f"use one of: {EXAMPLES}")
    return checked


def _local_socket(uri: str) -> bool:
    parts = urlsplit(uri)
    return uri.startswith("qemu:///") and "socket=" in parts.query and uri.isascii() and uri.isprintable()


def _validate(uri: str) -> str:
    try:
        parts = urlsplit(uri)
        parts.hostname  # noqa: B018 (a bracketed host that is no IPv6 address raises here)
    except ValueError as exc:
        raise InvalidInput(f"libvirt URI '{uri[:200]}' is malformed: {exc}", hint=f"use one of: {EXAMPLES}") from None
    if parts.scheme == "test":
        if parts.netloc:
            raise InvalidInput(f"test URI '{uri}' names a machine; the test driver is in-process",
                               hint="test:///default or test:///ABSOLUTE/PATH.xml")
        if parts.query or parts.fragment:
            raise InvalidInput(f"test URI '{uri}' takes no query or fragment", hint="test:///default or test:///PATH.xml")
        if parts.path == "/default":
            return uri
        if not parts.path.endswith(".xml") or not parts.path.startswith("/"):
            raise InvalidInput(f"test URI '{uri}' must be test:///default or an absolute path to a .xml file",
                               hint="e.g. test:///var/lib/nestor/sim/host-a.xml")
        try:
            found = Path(parts.path).is_file()
        except OSError:  # a name too long for the file system names no file either
            found = False
        if not found:
            raise NotFound(f"test URI '{uri}': no such file {parts.path}", hint="write the <node> XML first")
        return uri
    if parts.scheme in REMOTE_SCHEMES:
        if not parts.hostname:
            raise InvalidInput(f"libvirt URI '{uri}' has no host name", hint=f"e.g. {parts.scheme}://HOST/system")
        if parts.path not in ("/system", "/session"):
            raise InvalidInput(f"libvirt URI '{uri}' must end in /system (or /session)",
                               hint=f"e.g. {parts.scheme}://{parts.netloc}/system")
        _authority(uri, parts.netloc, parts.hostname)
        _query(uri, parts.query, parts.fragment)
        return uri
    if parts.scheme == "qemu" and parts.path in ("/system", "/session") and not parts.netloc:
        _query(uri, parts.query, parts.fragment, local=True)
        return uri  # this machine's own libvirtd
    raise InvalidInput(f"unsupported libvirt URI '{uri}'", hint=f"use one of: {EXAMPLES}")


def test_file(uri: str) -> Path | None:
    """The <node> file of a test:///PATH.xml URI (None for every other URI)."""
    parts = urlsplit(uri)
    if parts.scheme == "test" and parts.path != "/default":
        return Path(parts.path)
    return None


def _grammar() -> str:
    """The URIs nestor takes, as one regular expression (the OpenAPI document's pattern for
    `POST /v1/hosts`, api/rules.py): what `validate` accepts is exactly what this matches, except a
    local socket= (an existing daemon socket), which the pattern leaves out. Written once from the
    same tables as the checks above; a bracketed host is RFC 3986's IPv6address, form by form."""
    import itertools

    h16, octet = "[0-9A-Fa-f]{1,4}", "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
    ls32 = f"(?:{h16}:{h16}|{octet}(?:\\.{octet}){{3}})"
    forms = [f"(?:{h16}:){{6}}{ls32}", f"::(?:{h16}:){{5}}{ls32}", f"(?:{h16})?::(?:{h16}:){{4}}{ls32}"]
    forms += [f"(?:(?:{h16}:){{0,{i}}}{h16})?::(?:{h16}:){{{4 - i}}}{ls32}" for i in range(1, 4)]
    forms += [f"(?:(?:{h16}:){{0,4}}{h16})?::{ls32}", f"(?:(?:{h16}:){{0,5}}{h16})?::{h16}", f"(?:(?:{h16}:){{0,6}}{h16})?::"]
    ipv6 = f"\\[(?:{'|'.join(forms)})\\]"

    pairs = [f"{key}=(?:{'|'.join(values)})" for key, values in QUERY_KEYS.items()]
    queries = ["&".join(p) for n in range(1, len(pairs) + 1) for p in itertools.permutations(pairs, n)]
    query = f"(?:\\?(?:{'|'.join(queries)}))?"
    port = r"0*(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
    schemes = "|".join(re.escape(s) for s in REMOTE_SCHEMES)
    remote = (f"(?:{schemes})://(?:{_USER.pattern}@)?(?:[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?|{ipv6})"
              f"(?::(?:{port})?)?/(?:system|session){query}")
    local = f"qemu:///(?:system|session){query}"
    test = r"test:///default|test:///[^?#\x00-\x20\x7f]*\.xml"
    return f"{remote}|{local}|{test}"


GRAMMAR = _grammar()
_GRAMMAR_RE = re.compile(GRAMMAR)
