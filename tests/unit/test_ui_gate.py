"""The web UI's token gate and page routing, without a browser or VMs (the app in-process over httpx)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from nestor import ui
from nestor.api import tokens
from nestor.api.app import Settings, create_app


def get(app: Any, path: str, cookie: str | None = None, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if cookie is not None:
            headers["Cookie"] = f"{ui.COOKIE}={cookie}"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            return await client.get(path, headers=headers, **kwargs)

    return asyncio.run(go())


@pytest.fixture
def guarded(tmp_path: Path) -> tuple[Any, str]:
    home = tmp_path / "home"
    token = tokens.new(home, "browser")
    return create_app(Settings(home, require_token=True)), token


@pytest.mark.parametrize("path", ["/ui", "/ui/", "/ui/vms", "/ui/vms/new", "/ui/vms/web", "/ui/networks", "/ui/images"])
def test_every_page_redirects_to_login_without_a_valid_cookie(guarded: tuple[Any, str], path: str) -> None:
    app, token = guarded
    response = get(app, path)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/ui/login?next=")
    assert get(app, path, cookie="not-a-token").status_code == 303
    page = get(app, path, cookie=token)
    assert page.status_code == 200 and "<nav>" in page.text


def test_login_and_static_files_need_no_token_but_the_api_still_does(guarded: tuple[Any, str]) -> None:
    app, token = guarded
    assert get(app, "/ui/login").status_code == 200
    assert get(app, "/ui/static/app.js").status_code == 200
    assert get(app, "/ui/static/vendor/xterm/xterm.js").status_code == 200
    # The cookie is the UI's, never the API's (so no CSRF through it).
    refused = get(app, "/v1/vms", cookie=token)
    assert refused.status_code == 401 and refused.json()["error"]["kind"] == "unauthorized"
    assert get(app, "/v1/vms", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_login_returns_only_to_pages_of_the_ui(guarded: tuple[Any, str]) -> None:
    app, _ = guarded
    for target, expected in [("/ui/vms/web", "/ui/vms/web"), ("//evil.example/ui/", "/ui/"),
                             ("https://evil.example/ui/", "/ui/"), ("/v1/vms", "/ui/"), ("", "/ui/")]:
        page = get(app, "/ui/login", params={"next": target})
        assert f'data-next="{expected}"' in page.text, (target, page.text)


def test_without_require_token_pages_open_and_the_vm_name_is_escaped(tmp_path: Path) -> None:
    app = create_app(Settings(tmp_path / "home"))
    page = get(app, "/ui/vms/l1/web")
    assert page.status_code == 200
    assert 'data-vm="web"' in page.text and 'data-at="l1"' in page.text
    bad = get(app, "/ui/vms/<b>x")  # not a VM path: refused, and never reflected as markup
    assert bad.status_code == 404 and "<b>x" not in bad.text
    assert get(app, "/ui/nope").status_code == 404
