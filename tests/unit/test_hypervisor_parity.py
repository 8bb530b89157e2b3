"""One Hypervisor (nestor.hypervisor): the Service and the Client have every method of it with the
same signature (names, kinds, defaults, annotations), and every route of the API's table answers
exactly one of its methods, and every method but those of NO_ROUTE has exactly one route."""

from __future__ import annotations

import inspect
from collections import Counter
from typing import Any

import pytest

from nestor import hypervisor
from nestor.api import handlers
from nestor.api.table import RUNTIME
from nestor.client import Client
from nestor.hypervisor import NO_ROUTE, Hypervisor
from nestor.service import Service


def _names() -> dict[str, Any]:
    """What the annotations name, wherever each module imports it (some only for type checking)."""
    from nestor import client
    from nestor.images import debian
    from nestor.lab import types as lab_types
    from nestor.service import facade

    names: dict[str, Any] = {}
    for module in (hypervisor, client, facade, lab_types):  # lab types: imported only for type checking
        names.update(vars(module))
    names.update(DebianRequest=debian.DebianRequest, Hypervisor=Hypervisor, Client=Client)
    return names


def protocol_methods() -> list[str]:
    own = {name for name, value in vars(Hypervisor).items() if callable(value)}
    return sorted(own - set(vars(object)) | {"__enter__", "__exit__"})


def signature(owner: type, name: str) -> inspect.Signature:
    """The method's signature without `self`, its annotations evaluated (a staticmethod has none)."""
    function = inspect.getattr_static(owner, name)
    if isinstance(function, staticmethod):
        return inspect.signature(function.__func__, eval_str=True, globals=_names())
    sig = inspect.signature(function, eval_str=True, globals=_names())
    params = list(sig.parameters.values())
    assert params and params[0].name == "self", f"{owner.__name__}.{name}"
    return sig.replace(parameters=params[1:])


def _comparable(sig: inspect.Signature) -> tuple[Any, ...]:
    params = tuple((p.name, p.kind, p.default, p.annotation) for p in sig.parameters.values())
    ret = sig.return_annotation
    # guest() answers a Client, which is a Hypervisor; Self is each class's own
    if ret in (Client, "Client") or getattr(ret, "__name__", None) in ("Client", "Hypervisor"):
        ret = "Hypervisor"
    return params, str(ret)


def test_the_protocol_has_the_contracts_methods() -> None:
    methods = set(protocol_methods())
    assert {"vm_list", "vm_show", "vm_new", "vm_start", "vm_stop", "vm_remove", "vm_save", "vm_set_processor",
            "vm_set_memory", "vm_exec", "tree", "switch_new", "switch_list", "switch_show", "switch_set_ip",
            "switch_remove", "nat_new", "nat_list", "nat_show", "nat_remove", "adapter_add", "adapter_list",
            "adapter_set", "adapter_remove", "image_list", "image_build", "host_check", "guest", "close"} <= methods


@pytest.mark.parametrize("name", protocol_methods())
def test_service_and_client_have_the_protocols_signature(name: str) -> None:
    wanted = _comparable(signature(Hypervisor, name))
    for implementation in (Service, Client):
        assert hasattr(implementation, name), f"{implementation.__name__} has no {name}"
        assert _comparable(signature(implementation, name)) == wanted, f"{implementation.__name__}.{name}"


def test_a_changed_signature_is_caught() -> None:
    """The comparison sees a default, a name and an annotation (so the test above can fail)."""
    class Odd:
        def vm_stop(self, name: str, turn_off: bool = True, timeout: float = 30.0) -> None: ...
        def vm_show(self, vm: str) -> None: ...
        def vm_list(self) -> list[str]: ...

    for name in ("vm_stop", "vm_show", "vm_list"):
        assert _comparable(signature(Odd, name)) != _comparable(signature(Hypervisor, name))


def test_every_route_answers_one_method_and_every_method_has_one_route() -> None:
    methods = set(protocol_methods())
    routes = handlers.table.routes
    for route in routes:
        assert route.does, f"{route.method.upper()} {route.path} declares no `does`"
        if route.does == RUNTIME:
            assert route.path.startswith(("/operations", "/events/")), \
                f"{route.path}: only the operations and the events are the runtime's"
            continue
        assert route.does in methods, f"{route.method.upper()} {route.path}: {route.does} is not a Hypervisor method"
    served = Counter(route.does for route in routes if route.does != RUNTIME)
    twice = {name: n for name, n in served.items() if n > 1}
    assert not twice, f"methods with more than one route: {twice}"
    assert set(NO_ROUTE) <= methods
    assert not set(NO_ROUTE) & set(served), "a method of NO_ROUTE has a route"
    missing = methods - set(served) - set(NO_ROUTE)
    assert not missing, f"Hypervisor methods without a route (add one, or say why in NO_ROUTE): {sorted(missing)}"


def test_at_and_split_path() -> None:
    assert hypervisor.split_path("l1/l2/web") == (["l1", "l2"], "web")
    assert hypervisor.split_path("web") == ([], "web")
    assert hypervisor.split_levels("") == []
    from nestor.errors import InvalidInput

    for bad in ("l1//l2", "/l1", "l1/", "l1/bad name"):
        with pytest.raises(InvalidInput):
            hypervisor.split_levels(bad)

    class Level:
        def __init__(self, path: str) -> None:
            self.path, self.closed = path, False

        def guest(self, name: str) -> Level:
            return Level(f"{self.path}/{name}".lstrip("/"))

        def close(self) -> None:
            self.closed = True

    root = Level("")
    assert hypervisor.at(root, "") is root  # type: ignore[arg-type]
    assert hypervisor.at(root, "l1/l2").path == "l1/l2"  # type: ignore[arg-type, attr-defined]


def test_client_at_chain_closes_the_levels_it_opened() -> None:
    import httpx

    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json=[])

    root = Client(transport=httpx.MockTransport(answer))
    with hypervisor.at(root, "l1/l2") as l2:
        assert l2.vm_list() == []
    assert seen == ["http://nestor/v1/vms?at=l1%2Fl2"]
    assert not root._http.is_closed  # the root is the caller's
    with root.guest("l1") as l1:
        l1.switch_list()
    assert seen[-1] == "http://nestor/v1/switches?at=l1"
    root.close()
    assert root._http.is_closed


def test_level_errors_name_the_level() -> None:
    from nestor.errors import GuestError, NotFound

    err = hypervisor.level_error("l1/l9", "l1", NotFound("vm 'l9' not found", hint="nestor vm list"))
    assert isinstance(err, NotFound) and err.message == "vm 'l1/l9': no VM 'l9' in l1"
    silent = hypervisor.level_error("l1/l2", "l1", GuestError("vm 'l2': no answer from its nestor API within 5 s"))
    assert isinstance(silent, GuestError) and silent.message == "vm 'l1/l2': no answer from its nestor API within 5 s"
    here = NotFound("vm 'l9' not found")
    assert hypervisor.level_error("l9", "", here) is here
