"""Read a lab file: YAML through a safe loader, validated against the schema, into spec.Lab.

Every error is one line naming the key path (`vms.hv1.memory: '1X' is not a size`) and a hint;
sizes, names, addresses and MACs are as strict as the CLI's (the same parsers)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from ..errors import InvalidInput, NestorError
from ..model import parse_size, shown, validate_name
from ..net.addresses import parse_interface, parse_prefix, validate_mac
from .schema import SCHEMA
from .spec import AdapterDef, DynamicMemory, Lab, Level, NatDef, SwitchDef, VMDef

MAX_FILE = 1 << 20
MAX_DEPTH = 6  # L0 .. L6: deeper than anything TCG can boot in a day


def read(path: Path) -> Lab:
    return parse(read_text(path), str(path))


def read_text(path: Path) -> str:
    """The lab file's text (a caller of the API sends it; the API reads no file of the caller's naming)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read lab file {shown(str(path))}: {exc.strerror}", hint="give a lab file's path") from None
    if len(data) > MAX_FILE:
        raise InvalidInput(f"lab file {shown(str(path))} is larger than {MAX_FILE >> 20} MiB", hint="is this a lab file?")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise InvalidInput(f"lab file {shown(str(path))} is not UTF-8 text", hint="save it as UTF-8") from None
    return text


def parse(text: str, where: str = "lab file") -> Lab:
    """The lab of a file's text. The last text read well is remembered: the CLI checks a file
    before its home is opened, and the use case reads the same text again (a Lab does not depend
    on `where`, which only errors name; a text with an error is read again each time)."""
    global _last
    if _last is not None and _last[0] == text:
        return _last[1]
    if len(text) > MAX_FILE:
        raise InvalidInput(f"{where}: larger than {MAX_FILE >> 20} MiB", hint="is this a lab file?")
    lab = to_lab(load_yaml(text, where))
    _last = (text, lab)
    return lab


_last: tuple[str, Lab] | None = None


def _need(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise InvalidInput(f"lab files need the Python package {'PyYAML' if module == 'yaml' else module}",
                           hint="pip install 'nestor[lab]' (scripts/setup installs it)")


def load_yaml(text: str, where: str = "lab file") -> Any:
    _need("yaml")
    _need("jsonschema")
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: Loader, node: yaml.MappingNode) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node)
            if key in seen:
                mark = key_node.start_mark
                raise InvalidInput(f"{where}:{mark.line + 1}:{mark.column + 1}: duplicate key {shown(str(key))}",
                                   hint="each name appears once at its level: rename or remove one")
            seen.add(key)
        return loader.construct_mapping(node)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        data = yaml.load(text, Loader=Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        place = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark is not None else where
        raise InvalidInput(f"{place}: not valid YAML: {exc.problem}", hint="fix the YAML at that line and column") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{where}: not valid YAML: {exc}", hint="fix the YAML") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{where}: a lab file is a mapping with name, switches, nats and vms",
                           hint="start it with `name: mylab`")
    return data


def validate(data: Any) -> None:
    """The schema's first error (in key order), as one line."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise _schema_error(errors[0])


def _schema_error(error: Any) -> InvalidInput:
    path = ".".join(str(p) for p in error.absolute_path) or "(top)"
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = sorted(schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in known]
        if unknown and known:
            close = difflib.get_close_matches(str(unknown[0]), known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "known keys: " + ", ".join(known)
            return InvalidInput(f"{path}: unknown key {shown(str(unknown[0]))}", hint=hint)
    if error.validator == "propertyNames" or (error.validator == "pattern" and error.validator_value == SCHEMA_NAME):
        return InvalidInput(f"{path}: invalid name {shown(str(error.instance))}",
                            hint="use lower-case letters, digits and '-', starting and ending with a letter or digit")
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in (error.instance or {})]
        return InvalidInput(f"{path}: '{missing[0] if missing else '?'}' is missing", hint=f"add {missing[0]}: to {path}")
    if error.validator == "enum":
        return InvalidInput(f"{path}: {shown(str(error.instance))} is not one of "
                            + ", ".join(str(v) for v in error.validator_value),
                            hint=f"use one of {', '.join(str(v) for v in error.validator_value)}")
    if error.validator == "type":
        return InvalidInput(f"{path}: {shown(str(error.instance))} is not {_type_word(error.validator_value)}",
                            hint="see docs/lab.schema.json")
    return InvalidInput(f"{path}: {shown(error.message, 100)}", hint="see docs/lab.schema.json")


SCHEMA_NAME = SCHEMA["properties"]["name"]["pattern"]


def _type_word(types: Any) -> str:
    words: dict[str, str] = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "a whole number",
             "boolean": "true or false"}
    if isinstance(types, list):
        return " or ".join(words.get(str(t), str(t)) for t in types)
    return words.get(str(types), str(types))


def to_lab(data: dict[str, Any]) -> Lab:
    validate(data)
    name = data["name"]
    return Lab(name, _level(data, "", ""))


def _level(data: dict[str, Any], path: str, keys: str) -> Level:
    """`keys` is the key path of the mapping that holds this level ("" at the top)."""
    prefix = f"{keys}." if keys else ""
    switches = {n: _switch(n, s, f"{prefix}switches.{n}") for n, s in (data.get("switches") or {}).items()}
    nats = {n: _nat(n, s, f"{prefix}nats.{n}", switches) for n, s in (data.get("nats") or {}).items()}
    vms: dict[str, VMDef] = {}
    for n, v in (data.get("vms") or {}).items():
        vms[n] = _vm(n, v, path, f"{prefix}vms.{n}", switches)
    return Level(path, switches, nats, vms)


def _checked(where: str, call: Any, *args: Any) -> Any:
    """One of nestor's parsers, its error prefixed with the key path."""
    try:
        return call(*args)
    except NestorError as exc:
        raise InvalidInput(f"{where}: {exc.message}", hint=exc.hint) from None


def _switch(name: str, data: dict[str, Any], where: str) -> SwitchDef:
    _checked(where, validate_name, name, "switch")
    address = data.get("address")
    if address is not None:
        if data["type"] != "internal":
            raise InvalidInput(f"{where}.address: a {data['type']} switch has no address of the level",
                               hint="use type: internal, or drop the address")
        _checked(f"{where}.address", parse_interface, address)
    return SwitchDef(name, data["type"], address)


def _nat(name: str, data: dict[str, Any], where: str, switches: dict[str, SwitchDef]) -> NatDef:
    import ipaddress

    _checked(where, validate_name, name, "nat")
    prefix = _checked(f"{where}.prefix", parse_prefix, data["prefix"])
    switch = switches.get(data["switch"])
    if switch is None:
        raise InvalidInput(f"{where}.switch: no switch '{data['switch']}' at this level",
                           hint=_known("switches", list(switches), data["switch"]))
    if switch.type != "internal" or switch.address is None:
        raise InvalidInput(f"{where}.switch: '{switch.name}' needs type internal and an address in {prefix}",
                           hint=f"give switches.{switch.name} an address such as {next(prefix.hosts())}/{prefix.prefixlen}")
    if ipaddress.ip_interface(switch.address).ip not in prefix:
        raise InvalidInput(f"{where}.prefix: {prefix} does not hold the switch's address {switch.address}",
                           hint=f"use the switch's network, {ipaddress.ip_interface(switch.address).network}")
    return NatDef(name, switch.name, str(prefix), bool(data.get("dhcp", False)))


def _vm(name: str, data: dict[str, Any], path: str, where: str, switches: dict[str, SwitchDef]) -> VMDef:
    _checked(where, validate_name, name)
    memory = _size(f"{where}.memory", data.get("memory", "512M"))
    dynamic = None
    if "dynamic_memory" in data:
        d = data["dynamic_memory"] or {}
        dynamic = DynamicMemory(
            minimum=_size(f"{where}.dynamic_memory.minimum", d["minimum"]) if "minimum" in d else None,
            maximum=_size(f"{where}.dynamic_memory.maximum", d["maximum"]) if "maximum" in d else None,
            buffer=d.get("buffer"))
    adapters = tuple(_adapter(a, f"{where}.adapters.{i}", switches, i) for i, a in enumerate(data.get("adapters") or []))
    host = data.get("host")
    if host is not None and path:
        raise InvalidInput(f"{where}.host: only L0's VMs can be placed on a libvirt host", hint="drop host: here")
    image = data.get("image", "appliance")
    run = data.get("run")
    if run is not None and image != "appliance":
        raise InvalidInput(f"{where}.run: a run script is for the appliance image", hint="drop run:, or use image: appliance")
    inner_data: dict[str, Any] = {k: data[k] for k in ("switches", "nats", "vms") if k in data}
    inner = None
    if inner_data:
        child = f"{path}/{name}" if path else name
        if child.count("/") + 1 >= MAX_DEPTH:
            raise InvalidInput(f"{where}: deeper than L{MAX_DEPTH}", hint="flatten the lab")
        if image != "nested-host":
            raise InvalidInput(f"{where}: image '{image}' cannot run a hypervisor, so it cannot hold switches, nats or vms",
                               hint="use image: nested-host for a VM with its own level")
        inner = _level(inner_data, child, where)
    vm = VMDef(name, image, int(data.get("cpus", 1)), memory, bool(data.get("nested", False)), dynamic, adapters,
               run, tuple(data.get("ssh_keys") or ()), host, inner, data.get("cloud_init"))
    _guest(vm, data, where)
    return vm


def _guest(vm: VMDef, data: dict[str, Any], where: str) -> None:
    """What only a disk-image guest takes (cloud-init: keys, user-data), and what it does not (a
    kernel command line's static address, a libvirt host)."""
    from .. import cloudinit

    if not vm.disk_guest:
        for key in ("ssh_keys", "cloud_init"):
            if key in data:
                raise InvalidInput(f"{where}.{key}: the {vm.image} image does not read cloud-init, so it takes no {key}",
                                   hint=f"drop {key}: (nestor vm exec reaches it), or use a disk image such as "
                                        "image: debian-bookworm")
        return
    for i, line in enumerate(vm.ssh_keys):
        if "PRIVATE KEY" in line:
            raise InvalidInput(f"{where}.ssh_keys.{i}: this is a private key", hint="give the public key: the .pub file's line")
        if not cloudinit.is_public_key(line.strip()):
            raise InvalidInput(f"{where}.ssh_keys.{i}: {shown(line, 40)} is not an OpenSSH public key line",
                               hint="give a .pub file's line, such as 'ssh-ed25519 AAAA… you@host'")
    if vm.cloud_init is not None:
        if vm.ssh_keys:
            raise InvalidInput(f"{where}.cloud_init: cloud_init excludes ssh_keys (your user-data makes the users)",
                               hint="put the keys into the user-data (users: … ssh_authorized_keys:), or drop cloud_init:")
        if not vm.cloud_init.startswith(cloudinit.USER_DATA_STARTS):
            raise InvalidInput(f"{where}.cloud_init: user-data does not start with #cloud-config (or #!, #include)",
                               hint="its first line names its type, e.g. cloud_init: |, then #cloud-config")
    if vm.host is not None:
        raise InvalidInput(f"{where}.host: a disk-image guest ({vm.image}) runs on this level's QEMU, not on a libvirt host",
                           hint="drop host:, or use image: appliance")
    for i, adapter in enumerate(vm.adapters):
        if adapter.ip is not None:
            raise InvalidInput(f"{where}.adapters.{i}.ip: a static address is for the appliance images "
                               "(their kernel command line); a disk-image guest takes its address by DHCP",
                               hint="drop ip:, and give the switch a NAT with dhcp: true")


def _adapter(data: dict[str, Any], where: str, switches: dict[str, SwitchDef], index: int) -> AdapterDef:
    if data["switch"] not in switches:
        raise InvalidInput(f"{where}.switch: no switch '{data['switch']}' at this level",
                           hint=_known("switches", list(switches), data["switch"]))
    mac = _checked(f"{where}.mac", validate_mac, data["mac"]) if "mac" in data else None
    ip = data.get("ip")
    if ip is not None:
        if index != 0:
            raise InvalidInput(f"{where}.ip: only the first adapter takes a static address", hint="move ip: to adapters.0")
        _checked(f"{where}.ip", parse_interface, ip)
    gateway = data.get("gateway")
    if gateway is not None:
        import ipaddress

        try:
            ipaddress.IPv4Address(gateway)
        except ValueError:
            raise InvalidInput(f"{where}.gateway: invalid address {shown(gateway)}", hint="e.g. 10.81.0.1") from None
    return AdapterDef(data["switch"], mac, bool(data.get("mac_spoofing", False)), ip, gateway, bool(data.get("dhcp", False)))


def _size(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput(f"{where}: {shown(str(value))} is not a size", hint="use a size such as 512M or 2G")
    try:
        return parse_size(str(value))
    except NestorError:
        raise InvalidInput(f"{where}: {shown(str(value))} is not a size", hint="use a size such as 512M or 2G") from None


def _known(what: str, names: list[str], wanted: str) -> str:
    close = difflib.get_close_matches(wanted, names, n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"{what} here: {', '.join(names)}" if names else f"define it under {what}: at the same level"
