"""The web page: `/` (a single page on the public HTTP API) and its files under `/static/`.

Everything the page needs is served from `service/static/` (the plotting library included), so
it works offline. The page is held to a strict Content-Security-Policy: scripts, styles and
requests only from this origin.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
INDEX = STATIC_DIR / "index.html"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: a new release must not leave a stale page behind
}

router = APIRouter(tags=["web page"])
_files = StaticFiles(directory=STATIC_DIR, check_dir=False)


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    """The identification page."""
    return FileResponse(INDEX, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


@router.get("/static/{path:path}", include_in_schema=False)
async def static(path: str, request: Request) -> Response:
    """A file of the page (404 problem for anything else; ETag / 304 handled by Starlette)."""
    response = await _files.get_response(path, request.scope)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-cache")
    return response
