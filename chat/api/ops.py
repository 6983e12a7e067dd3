"""Operations: liveness, readiness, metrics, the API docs' assets and the landing page."""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, send_from_directory
from quart_schema import document_response, hide
from swagger_ui_bundle import swagger_ui_path

from chat.api.deps import identity, services
from chat.errors import Forbidden, Unavailable
from chat.metrics import CONTENT_TYPE
from chat.models import Status
from chat.store import writes

bp = Blueprint("ops", __name__)

STATIC_DIR = Path(__file__).resolve().parent.parent.parent / "static"
DOCS_ASSETS = "/docs/assets"


@bp.get("/healthz")
@document_response(Status)
async def healthz() -> dict[str, str]:
    """200 while the process runs."""
    return {"status": "ok"}


@bp.get("/readyz")
@document_response(Status)
async def readyz() -> dict[str, str]:
    """200 when the store and the broker answer; 503 otherwise, while the database takes no
    writes (read-only, full) and while shutting down."""
    svc = services()
    if svc.shutting_down:
        raise Unavailable("shutting down")
    if not svc.store.accepting_writes:
        raise Unavailable("the store is not accepting writes")
    if svc.store.unwritable is not None:
        await svc.store.write(writes.probe)  # 503 while it still cannot; clears it once it can
    try:
        await svc.store.ping()
    except Exception as exc:
        raise Unavailable(f"the store does not answer: {exc}") from exc
    if not await svc.broker.ready():
        raise Unavailable("the broker is not connected; reconnecting")
    return {"status": "ready"}


@bp.get("/metrics")
@hide
async def metrics() -> Response:
    """Public in `open` mode; in `required` mode for admins and bots (a scraper sends a bot
    token), unless CHAT_METRICS_PUBLIC is set."""
    svc = services()
    who = identity()
    if not svc.auth.metrics_public and (who is None or who.role not in ("admin", "bot")):
        raise Forbidden("/metrics is for admins and bots (or set CHAT_METRICS_PUBLIC=true)")
    return Response(svc.metrics.render(), content_type=CONTENT_TYPE)


@bp.get(DOCS_ASSETS + "/<path:name>")
@hide
async def docs_assets(name: str) -> Response:
    """Swagger UI's files, served from the installed package: /docs works offline."""
    return await send_from_directory(str(swagger_ui_path), name)


# The page runs only its own files: no inline script or style, no other origin.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
# /docs: Swagger UI sets style attributes from its script, and shows SVG icons as data: URLs.
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
# What every page of the service answers besides its CSP (ACCESS.md, Other headers).
PAGE_HEADERS = {"Referrer-Policy": "same-origin", "Cache-Control": "no-cache"}


async def _page(name: str, csp: str) -> Response:
    response = await send_from_directory(str(STATIC_DIR), name)
    response.headers["Content-Security-Policy"] = csp
    response.headers.update(PAGE_HEADERS)
    return response


@bp.get("/")
@hide
async def index() -> Response:
    """The browser chat page."""
    return await _page("index.html", PAGE_CSP)


@bp.get("/docs")
@hide
async def docs() -> Response:
    """The API's description as a page (Swagger UI over /openapi.json)."""
    return await _page("docs.html", DOCS_CSP)
