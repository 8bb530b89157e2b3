"""The libvirt driver (nestor.remote.hosts.Hosts, and remote/nats.py's RemoteNats for NATs)
answers the Hypervisor protocol's VM, host and NAT methods with the protocol's own signatures and
types: statically (each method's signature, return annotation included, is the protocol's) and
at run time (what each method returns on libvirt's test driver is an instance of the protocol's
return type, down to every field of the dataclasses: a VMInfo whose `state` is libvirt's word
"running" instead of a VMState fails). So the Service hands it a VM on a libvirt host with
nothing to translate (service/remote.py).
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nestor import hypervisor
from nestor.hypervisor import Hypervisor
from nestor.remote import hosts as hosts_mod
from nestor.remote import libvirt_engine, testnode
from nestor.remote.hosts import AUTO, Hosts
from nestor.remote.nats import RemoteNats
from nestor.service.net_types import NatSpec
from nestor.service.types import MemoryChange, StopResult, VMSpec
from nestor.state import db

G = 1 << 30
M = 1 << 20

# The protocol's methods a per-VM driver answers (a VM's life, and the hosts it lives on).
DRIVER_METHODS = (
    "vm_list", "vm_show", "vm_new", "vm_start", "vm_stop", "vm_remove", "vm_save", "vm_set_processor",
    "vm_set_memory", "vm_move", "host_add", "host_list", "host_show", "host_remove",
)
NAT_METHODS = ("nat_new", "nat_list", "nat_show", "nat_remove")  # RemoteNats: NATs on libvirt hosts
DRIVERS = {Hosts: DRIVER_METHODS, RemoteNats: NAT_METHODS}


def _globals() -> dict[str, Any]:
    from nestor.images import debian

    names: dict[str, Any] = {}
    from nestor.remote import nats

    for module in (hypervisor, hosts_mod, nats):
        names.update(vars(module))
    names.update(DebianRequest=debian.DebianRequest, Hypervisor=Hypervisor)
    return names


def signature(owner: type, name: str) -> inspect.Signature:
    """The method's signature without `self`, annotations evaluated."""
    sig = inspect.signature(inspect.getattr_static(owner, name), eval_str=True, globals=_globals())
    params = list(sig.parameters.values())
    assert params and params[0].name == "self", f"{owner.__name__}.{name}"
    return sig.replace(parameters=params[1:])


def comparable(sig: inspect.Signature) -> tuple[Any, ...]:
    return tuple((p.name, p.kind, p.default, p.annotation) for p in sig.parameters.values()), sig.return_annotation


def returns(name: str) -> Any:
    """The protocol's return type of method `name`."""
    return signature(Hypervisor, name).return_annotation


# -- the run-time check -------------------------------------------------------------------------
def mismatch(value: Any, tp: Any, where: str) -> str | None:
    """Why `value` is not of type `tp` (recursing into lists and dataclass fields), or None."""
    if tp is Any:
        return None
    if tp is None or tp is type(None):
        return None if value is None else f"{where}: {value!r} is not None"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        reasons = [mismatch(value, arm, where) for arm in typing.get_args(tp)]
        return None if any(r is None for r in reasons) else " / ".join(r for r in reasons if r)
    if origin in (list, tuple):
        if not isinstance(value, origin):
            return f"{where}: {type(value).__name__} is not {origin.__name__}"
        args = typing.get_args(tp)
        item = args[0] if args else Any
        for i, v in enumerate(value):
            found = mismatch(v, item, f"{where}[{i}]")
            if found:
                return found
        return None
    if origin is dict:
        return None if isinstance(value, dict) else f"{where}: {type(value).__name__} is not dict"
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"{where}: {value!r} is not float"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return None if type(value) is tp else f"{where}: {value!r} is not a {tp.__name__}"
    if not isinstance(value, tp):
        return f"{where}: {type(value).__name__} {value!r} is not {tp.__name__}"
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        for field in dataclasses.fields(tp):
            found = mismatch(getattr(value, field.name), hints[field.name], f"{where}.{field.name}")
            if found:
                return found
    return None


class Checked:
    """A driver, with every call of its protocol methods checked against the protocol's type."""

    def __init__(self, driver: Any, methods: tuple[str, ...] = DRIVER_METHODS) -> None:
        self.driver = driver
        self.methods = methods
        self.called: set[str] = set()
        self.wrong: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.driver, name)
        if name not in self.methods:
            return method

        def call(*args: Any, **kw: Any) -> Any:
            result = method(*args, **kw)
            self.called.add(name)
            found = mismatch(result, returns(name), name)
            if found:
                self.wrong.append(found)
            return result

        return call


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Hosts]:
    for name, kind, memory in (("a", "amd", 16 * G), ("b", "amd", 32 * G)):
        (tmp_path / f"{name}.xml").write_text(testnode.node_xml(kind, memory))
    yield Hosts(db.connect(tmp_path / "nestor.db"), lambda dom: (False, "test: no hypervisor"))
    libvirt_engine.disconnect_all()


def lifecycle(hv: Any, nats: Any, tmp_path: Path) -> None:
    """Every driver method once or more, as a user would go through them."""
    hv.host_add("a", f"test://{tmp_path}/a.xml")
    hv.host_add("b", f"test://{tmp_path}/b.xml")
    hv.host_list()
    nats.nat_new(NatSpec("vmnat", None, "192.168.100.0/24", dhcp=True, host="a"))
    nats.nat_list()
    nats.nat_show("vmnat")
    hv.vm_new(VMSpec("l1", host=AUTO, memory=1 * G, maximum=2 * G, nested=True))
    hv.vm_new(VMSpec("web", host="a", memory=512 * M, network="vmnat"))
    hv.host_show("b")
    hv.vm_list()
    hv.vm_start("l1")
    hv.vm_show("l1")  # running: balloon and hypervisor fields
    hv.vm_set_memory("l1", MemoryChange(startup=1536 * M))  # live
    hv.vm_save("l1")
    hv.vm_show("l1")  # saved
    hv.vm_start("l1")
    hv.vm_stop("l1", turn_off=True)
    hv.vm_set_processor("l1", count=2, nested=True)
    hv.vm_set_memory("l1", MemoryChange(startup=1 * G))  # off
    hv.vm_move("l1", "a")  # off: the definition moves
    hv.vm_list()
    hv.vm_remove("l1")
    hv.vm_remove("web")
    nats.nat_remove("vmnat")
    hv.host_remove("b")


# -- the tests ----------------------------------------------------------------------------------
def test_driver_methods_are_protocol_methods() -> None:
    protocol = {name for name, value in vars(Hypervisor).items() if callable(value)}
    assert set(DRIVER_METHODS) <= protocol


@pytest.mark.parametrize(("owner", "name"), [(o, n) for o, names in DRIVERS.items() for n in names])
def test_the_libvirt_driver_has_the_protocols_signature(owner: type, name: str) -> None:
    assert hasattr(owner, name), f"{owner.__name__} has no {name}"
    assert comparable(signature(owner, name)) == comparable(signature(Hypervisor, name)), f"{owner.__name__}.{name}"


@pytest.mark.parametrize("owner", list(DRIVERS))
def test_no_driver_method_shadows_a_protocol_method_with_another_signature(owner: type) -> None:
    """A public method of a driver named like one of the protocol's is the protocol's."""
    protocol = {name for name, value in vars(Hypervisor).items() if callable(value)} - set(vars(object))
    for name, value in vars(owner).items():
        if callable(value) and name in protocol:
            assert comparable(signature(owner, name)) == comparable(signature(Hypervisor, name)), \
                f"{owner.__name__}.{name}"


def test_what_the_libvirt_driver_returns_is_the_protocols_type(driver: Hosts, tmp_path: Path) -> None:
    checked, nats = Checked(driver), Checked(RemoteNats(driver), NAT_METHODS)
    lifecycle(checked, nats, tmp_path)
    for seen, wanted in ((checked, DRIVER_METHODS), (nats, NAT_METHODS)):
        assert seen.called == set(wanted), f"not exercised: {set(wanted) - seen.called}"
        assert not seen.wrong, seen.wrong


def test_a_driver_that_answers_in_sentences_is_caught() -> None:
    """Both checks can fail: a str where the protocol says StopResult, and a VMInfo-like result
    whose state is libvirt's word rather than a VMState."""
    from nestor.service.types import VMInfo

    class Sentences:
        def vm_stop(self, name: str, turn_off: bool = False, timeout: float = 30.0) -> str:
            return "turned off"

    assert comparable(signature(Sentences, "vm_stop")) != comparable(signature(Hypervisor, "vm_stop"))
    checked = Checked(Sentences())
    checked.vm_stop("web")
    assert checked.wrong and "is not StopResult" in checked.wrong[0]
    assert returns("vm_stop") is StopResult

    worded = VMInfo("web", "running", 1, M, False, "-", None)  # type: ignore[arg-type]
    found = mismatch(worded, VMInfo, "vm_show")
    assert found is not None and "vm_show.state" in found
    assert mismatch([worded], returns("vm_list"), "vm_list") is not None

