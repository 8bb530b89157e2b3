"""Property-based fuzz of the API in-process: every route of the OpenAPI document, random path
parameters, query values and JSON bodies (valid by the schema or not). No answer may be a 500,
and every error is the one envelope.

The app runs on a temporary home whose network namespace the test created, so a body that
happens to be valid (a switch, a NAT) changes nothing outside it; teardown removes what it made.
QEMU never starts: the one defined VM (dummy kernel) is never the target of `start`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from nestor.api import openapi
from nestor.api.app import Settings, create_app
from nestor.images import debian as debian_images
from tests.helpers import LOCAL, no_debian_build, operations_ended

EXAMPLES = int(os.environ.get("NESTOR_FUZZ_EXAMPLES", "25"))  # per route: ~30 routes × 25 requests, ~25 s
SPEC = openapi.document()
SKIP = {("get", "/v1/events")}  # an endless stream; tested end to end
KNOWN = ["a", "sw0", "nat0", "eth0", "appliance"]
# Names that must never reach a route that does real host work (boot a VM, build an image).
NO_WORK = {("post", "/v1/vms/{name}/start"): {"a"}, ("delete", "/v1/vms/{name}"): {"a"},
           ("post", "/v1/images/{name}/build"): {"appliance", "nested-host", "debian"}}

ROUTES = [(method, path, op) for path, item in SPEC["paths"].items() for method, op in item.items()
          if (method, path) not in SKIP]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("the fuzz makes its own network namespace: needs root and iproute2")
    netns = f"nt-fz{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", netns], check=True, timeout=30)
    root = tmp_path_factory.mktemp("fuzz")
    home = root / "home"
    home.mkdir()
    (root / "vmlinux").write_bytes(b"not a kernel")
    settings_ = Settings(home, netns, files=root)  # the kernel file is in root
    try:
        # A valid body of POST /v1/images/debian/build would start minutes of mmdebstrap (no path
        # parameter keeps it away): the build itself is stubbed, its checks are fuzzed.
        with pytest.MonkeyPatch.context() as patch, TestClient(create_app(settings_), base_url=LOCAL) as client:
            patch.setattr(debian_images, "build_debian", no_debian_build)
            created = client.post("/v1/vms", json={"name": "a", "memory": 256 << 20, "kernel": str(root / "vmlinux")})
            assert created.status_code == 201, created.text
            yield client
            ops = operations_ended(client)
            bugs = [op for op in ops if (op.get("error") or {}).get("kind") == "internal"]
            assert not bugs, f"operations that failed with a bug: {bugs}"
    finally:
        _teardown(settings_)
        subprocess.run(["ip", "netns", "del", netns], check=False, timeout=30)


def _teardown(settings_: Settings) -> None:
    """Remove whatever valid bodies created (dnsmasq of a NAT is a process: stop it by its NAT)."""
    from tests.helpers import reap_home

    with settings_.service() as service:
        for nat in service.nat_list():
            service.nat_remove(nat.name)
        for switch in service.switch_list():
            service.switch_remove(switch.name, force=True)
    reap_home(settings_.home)


# -- strategies from the document ------------------------------------------------------------------
def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SPEC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


JSON_ANY = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def from_schema(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of the schema's shape, with edge values (huge, negative, empty, unicode)."""
    schema = _resolve(schema)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, depth) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object" and depth < 3:
        props = schema.get("properties", {})
        return st.fixed_dictionaries({}, optional={k: from_schema(v, depth + 1) for k, v in props.items()})
    if kind == "array" and depth < 3:
        return st.lists(from_schema(schema.get("items", {}), depth + 1), max_size=4)
    if kind == "integer":
        return st.integers() | st.sampled_from([0, -1, 1, 256 << 20, 1 << 62, -(1 << 63)])
    if kind == "number":
        # JSON has no NaN or infinity (the query strategy sends those as text)
        return st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([0.0, -1.0, 0.001, 1e300])
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        return st.text(max_size=40) | st.sampled_from([*KNOWN, "", "../..", "a" * 300, "internal", "10.0.0.1/24"])
    if kind == "null":
        return st.none()
    return JSON_ANY


def path_value(method: str, path: str, name: str) -> st.SearchStrategy[str]:
    forbidden = NO_WORK.get((method, path), set())
    return (st.sampled_from(KNOWN) | st.text(min_size=1, max_size=30)).filter(lambda v: v not in forbidden)


def body_of(op: dict[str, Any]) -> st.SearchStrategy[Any]:
    content = op.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return st.none() | JSON_ANY
    return from_schema(content["schema"]) | JSON_ANY


def query_of(op: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    params = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "query"}
    scalar = st.text(max_size=12) | st.integers().map(str) | st.floats().map(str) | st.sampled_from(["true", "0"])
    return st.fixed_dictionaries({}, optional={name: from_schema(p.get("schema", {})).map(_query_text) | scalar
                                               for name, p in params.items()})


def _query_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


@pytest.mark.parametrize(("method", "path", "op"), ROUTES, ids=[f"{m.upper()} {p}" for m, p, _ in ROUTES])
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])
@given(data=st.data())
def test_no_500(api: TestClient, method: str, path: str, op: dict[str, Any], data: st.DataObject) -> None:
    url = path
    for param in (p for p in op.get("parameters", []) if p["in"] == "path"):
        value = data.draw(path_value(method, path, param["name"]), label=param["name"])
        url = url.replace("{" + param["name"] + "}", urllib.parse.quote(value, safe=""))
        url = url.replace("{" + param["name"] + ":path}", urllib.parse.quote(value, safe="/"))
    query = data.draw(query_of(op), label="query")
    if path == "/v1/vms/{name}/log" and "until" in query:
        query["timeout"] = "0.5"  # a long-poll for text that never comes waits as long as it was told to
    body = data.draw(body_of(op), label="body")
    kwargs: dict[str, Any] = {"params": query}
    if body is not None:
        kwargs["json"] = body
    # No redirects: a path value such as "." normalises to another route's URL (307), whose answer
    # is not this route's to check.
    response = api.request(method.upper(), url, follow_redirects=False, **kwargs)
    assert response.status_code != 500, f"{method.upper()} {url} {query} {body!r}: {response.text}"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["kind"] and error["message"], response.text
    model = DOCUMENTED.get((method, path, response.status_code))
    if model is not None and response.url.raw_path.split(b"?")[0].decode() == url:  # a success is what the document says it is
        TypeAdapter(model).validate_python(response.json())


def _documented() -> dict[tuple[str, str, int], Any]:
    from fastapi.routing import APIRoute

    from nestor.api.routes import router

    found = {}
    for route in router.router(documented=True).routes:  # the served router documents no models
        if isinstance(route, APIRoute):
            path = route.path_format.replace("{target:path}", "{target}")
            for status, response in route.responses.items():
                if "model" in response and int(status) < 300:
                    found.update({(m.lower(), path, int(status)): response["model"] for m in route.methods})
    return found


DOCUMENTED = _documented()


def test_successes_are_checked_against_the_document() -> None:
    assert DOCUMENTED[("get", "/v1/vms", 200)] is not None and ("post", "/v1/vms/{name}/start", 202) in DOCUMENTED


# Issue 18's categories, through the same app: coerced types and files outside the files directory.
COERCED = [{"vcpus": True}, {"vcpus": "2"}, {"memory": "268435456"}, {"nested": 1}, {"name": 7}, {"switches": [1]}]
OUTSIDE = [{"run_script": "/etc/shadow"}, {"kernel": "/etc/shadow"}, {"iso": "/etc/shadow"},
           {"image": "x", "ssh_key": "/etc/shadow"}, {"image": "x", "cloud_init": "/etc/shadow"}, {"kernel": "/dev/zero"}]


@pytest.mark.parametrize("bad", COERCED + OUTSIDE, ids=[str(b) for b in COERCED + OUTSIDE])
def test_coerced_types_and_outside_files_are_refused(api: TestClient, bad: dict[str, Any]) -> None:
    response = api.post("/v1/vms", json={"name": "b", "memory": 256 << 20, **bad})
    assert response.status_code == (403 if bad in OUTSIDE else 400), response.text  # 403: a file not this caller's
    assert response.json()["error"]["kind"] == ("forbidden" if bad in OUTSIDE else "invalid_input")
    assert [vm["name"] for vm in api.get("/v1/vms").json()] == ["a"]
    imported = api.post("/v1/images/store", json={"path": "/etc/shadow"})
    assert imported.status_code == 403 and "files directory" in imported.json()["error"]["message"], imported.text


def test_listen_takes_ascii_ports_only() -> None:
    """Issue 18: `--listen 127.0.0.1:９９９９` was port 9999 (str.isdigit and int() take any digit)."""
    from nestor.api.server import parse_listen
    from nestor.errors import InvalidInput

    assert parse_listen("127.0.0.1:8443") == ("127.0.0.1", 8443)
    for bad in ("127.0.0.1:\uff19\uff19\uff19\uff19", "127.0.0.1:\u0664\u0664", "127.0.0.1:\u00b2", "127.0.0.1:000008443"):
        with pytest.raises(InvalidInput):
            parse_listen(bad)
