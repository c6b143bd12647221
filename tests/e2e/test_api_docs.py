"""``/docs`` and ``/redoc`` render in a real browser with no internet: their assets ship inside.

Chromium may reach the server only; any other request is aborted and recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from browser import browser
from playwright.sync_api import Browser, Page, Route, expect

from serverproc import Server

__all__ = ["browser"]  # fixture, used by name

pytestmark = pytest.mark.slow


@pytest.fixture
def offline_page(browser: Browser, server: Server) -> Iterator[tuple[Page, list[str]]]:
    """A tab that may only reach the server; the URLs it tried elsewhere are listed."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(15_000)
    outside: list[str] = []
    host = urlsplit(server.url).netloc

    def gate(route: Route) -> None:
        if urlsplit(route.request.url).netloc == host:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", gate)
    yield context.new_page(), outside
    context.close()


def test_swagger_ui_renders_the_routes_offline(
    server: Server, offline_page: tuple[Page, list[str]]
) -> None:
    page, outside = offline_page
    page.goto(server.url + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Headwater")
    expect(
        page.locator(".opblock-summary-path", has_text="/v1/streams/{name}/events").first
    ).to_be_visible()
    expect(page.locator(".opblock-summary-path", has_text="/v1/query").first).to_be_visible()
    assert outside == []


def test_redoc_renders_the_routes_offline(
    server: Server, offline_page: tuple[Page, list[str]]
) -> None:
    page, outside = offline_page
    page.goto(server.url + "/redoc")
    expect(page.get_by_text("/v1/streams/{name}/events").first).to_be_attached()
    # ReDoc's "API docs by Redocly" credit links its logo: a missing image, nothing more
    assert all(url.endswith("/logo-mini.svg") for url in outside), outside


def test_docs_pages_name_no_outside_host(server: Server) -> None:
    for path in ("/docs", "/redoc"):
        page = httpx.get(server.url + path).text
        assert "http://" not in page and "https://" not in page, page
