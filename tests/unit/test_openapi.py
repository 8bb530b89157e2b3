"""The committed OpenAPI document (docs/openapi.json) is the app's: regenerate it when routes change."""

from __future__ import annotations

import json

from nestor.api import openapi


def test_committed_openapi_matches_the_app() -> None:
    committed = openapi.DEFAULT.read_text()
    assert json.loads(committed) == openapi.document(), "docs/openapi.json is stale: run python -m nestor.api.openapi"
    assert committed == openapi.render()  # and byte for byte, so diffs stay reviewable


def test_document_covers_every_route_with_its_answer() -> None:
    spec = openapi.document()
    paths = spec["paths"]
    assert {"/v1/vms", "/v1/vms/{name}", "/v1/vms/{name}/processor", "/v1/operations/{op_id}", "/v1/events",
            "/v1/host", "/v1/tree", "/v1/switches", "/v1/nats"} <= set(paths)
    vm_list = paths["/v1/vms"]["get"]["responses"]
    assert vm_list["200"]["content"]["application/json"]["schema"]["items"]["$ref"].endswith("/VMInfo")
    assert paths["/v1/vms/{name}/processor"]["patch"]["responses"]["422"]["content"]["application/json"]["schema"][
        "$ref"].endswith("/ErrorEnvelope")
    states = spec["components"]["schemas"]["VMState"]["enum"]
    assert {"off", "running", "saved"} <= set(states)


def test_check_mode(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    stale = tmp_path / "openapi.json"
    stale.write_text("{}\n")
    assert openapi.main(["--check", str(stale)]) == 1
    assert openapi.main([str(stale)]) == 0
    assert openapi.main(["--check", str(stale)]) == 0
