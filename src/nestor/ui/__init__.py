"""The web UI, served by `nestor serve` at /ui: server-rendered pages that call the API from the browser.

Each page is a Jinja2 template (templates/) with its data read and its actions sent by the browser
through the API under /v1 (static/app.js), so the UI can do exactly what the API allows and shows
the API's errors (message, hint, rule) as they are. Front-end libraries are vendored from npm at
pinned versions with their licences (static/vendor/, see VENDOR.md there); there is no JS build.

Tokens: when the app requires one (TCP with TLS), every /ui page needs the `nestor_token` cookie
to hold a valid token, else it redirects to /ui/login. The login page's script checks the token
against the API and stores it in that cookie (SameSite=Strict, Secure over TLS); the script then
sends it as `Authorization: Bearer` to /v1 and as `?token=` on the console websocket. The API
itself never accepts the cookie, so another site cannot make the browser act (no CSRF). Static
files (scripts, styles, vendored libraries) hold no data and are served without a token so the
login page can load them.
"""

from __future__ import annotations

import functools
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

if TYPE_CHECKING:
    from fastapi.templating import Jinja2Templates

__all__ = ["COOKIE", "PREFIX", "register", "serves"]

PREFIX = "/ui"
COOKIE = "nestor_token"
HERE = Path(__file__).parent
router = APIRouter(prefix=PREFIX, include_in_schema=False)

PAGES = [("overview", "Overview", f"{PREFIX}/"), ("vms", "VMs", f"{PREFIX}/vms"), ("new", "Create VM", f"{PREFIX}/vms/new"),
         ("networks", "Networks", f"{PREFIX}/networks"), ("labs", "Labs", f"{PREFIX}/labs"),
         ("images", "Images", f"{PREFIX}/images"),
         ("audit", "Audit", f"{PREFIX}/audit")]


def serves(path: str) -> bool:
    """Whether PATH is the UI's (the UI checks its own cookie; the API's bearer check skips it)."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def _token_ok(request: Request, token: str | None) -> bool:
    from ..api import tokens

    return bool(token) and tokens.valid(request.app.state.settings.home, (token or "").strip())


def _gate(request: Request) -> Response | None:
    """Without a valid token cookie (when tokens are required): a redirect to the login page."""
    if not request.app.state.settings.require_token:
        return None
    path = request.url.path
    if path.startswith(f"{PREFIX}/static/") or path == f"{PREFIX}/login":
        return None
    if _token_ok(request, request.cookies.get(COOKIE)):
        return None
    target = path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{PREFIX}/login?next={quote(target, safe='')}", status_code=303)


@functools.cache
def _templates() -> Jinja2Templates:
    """Loaded on the first page, not at import: an L1's daemon starts under TCG, where imports cost."""
    from fastapi.templating import Jinja2Templates

    return Jinja2Templates(directory=str(HERE / "templates"))


def _page(request: Request, template: str, page: str, **context: Any) -> HTMLResponse:
    settings = request.app.state.settings
    return _templates().TemplateResponse(request, template, {
        "pages": PAGES, "page": page, "prefix": PREFIX, "require_token": settings.require_token, **context})


@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
def overview(request: Request) -> HTMLResponse:
    return _page(request, "overview.html", "overview")


@router.get("/vms", response_class=HTMLResponse)
def vms(request: Request) -> HTMLResponse:
    return _page(request, "vms.html", "vms")


@router.get("/vms/new", response_class=HTMLResponse)
def vm_new(request: Request) -> HTMLResponse:
    return _page(request, "new.html", "new")


@router.get("/vms/{path:path}", response_class=HTMLResponse)
def vm_detail(request: Request, path: str) -> HTMLResponse:
    """The page of the VM at PATH: `l1` here, `l1/l2` the VM l2 of l1's nestor (its API calls carry `at=l1`)."""
    from ..errors import NestorError
    from ..hypervisor import split_path

    try:
        levels, name = split_path(path)
    except NestorError as err:
        return HTMLResponse(f"not a VM path: {escape(err.message)}", status_code=404)
    return _page(request, "vm.html", "vms", vm=name, at="/".join(levels), path=path,
                 crumbs=[("/".join(levels[:i + 1]), level) for i, level in enumerate(levels)])


@router.get("/networks", response_class=HTMLResponse)
def networks(request: Request) -> HTMLResponse:
    return _page(request, "networks.html", "networks")


@router.get("/labs", response_class=HTMLResponse)
def labs(request: Request) -> HTMLResponse:
    """The labs of this home: each one's tree with states, and its save, restore and down."""
    return _page(request, "labs.html", "labs")


@router.get("/images", response_class=HTMLResponse)
def images(request: Request) -> HTMLResponse:
    return _page(request, "images.html", "images")


@router.get("/audit", response_class=HTMLResponse)
def audit(request: Request) -> HTMLResponse:
    return _page(request, "audit.html", "audit")


def _safe_next(target: str | None) -> str:
    """Only a path of the UI itself (no open redirect)."""
    if target and serves(target.split("?", 1)[0]) and not target.startswith("//"):
        return target
    return f"{PREFIX}/"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    return _page(request, "login.html", "login", next=_safe_next(next))


def register(app: FastAPI) -> None:
    """Mount the UI on APP: its pages, its static files, and the token gate of its pages."""
    app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")

    @app.middleware("http")
    async def ui_gate(request: Request, call_next: Any) -> Response:
        if serves(request.url.path):
            denied = _gate(request)
            if denied is not None:
                return denied
        response: Response = await call_next(request)
        return response
