"""Serve the dashboard: ``/`` answers the page, ``/ui/...`` its static assets.

The dashboard holds no business logic and no data: it is a set of static files that
read the public HTTP API with the key the user signs in with. Serving it needs no key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"

# The page is tiny and its assets change with each release: always revalidate.
NO_CACHE = {"Cache-Control": "no-cache"}


class _Assets(StaticFiles):
    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(NO_CACHE)
        return response


def install(app: FastAPI, platform: object) -> None:
    """Mount the dashboard on ``app`` (the same for every profile)."""

    @app.get("/", include_in_schema=False)
    async def dashboard() -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=NO_CACHE)

    app.mount("/ui", _Assets(directory=STATIC_DIR), name="ui")
