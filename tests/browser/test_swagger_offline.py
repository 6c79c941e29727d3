"""Swagger UI and Redoc work with no internet: every asset is served by the test server."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import Client

from tests.browser.conftest import expect, login

pytestmark = pytest.mark.browser

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or parts.hostname in LOCAL_HOSTS


@pytest.mark.parametrize("width", [1400, 390])
def test_swagger_ui_renders_its_operations_with_the_network_closed(
    page: Any, admin_user: Any, width: int
) -> None:
    refused: list[str] = []

    def close_the_network(route: Any) -> None:
        if _is_local(route.request.url):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    page.context.route("**/*", close_the_network)
    page.set_viewport_size({"width": width, "height": 900})
    login(page, admin_user, next_url="/admin/")
    page.goto("/api/docs/")
    # Operations render only once Swagger UI's script ran and fetched the local schema.
    expect(page.locator(".opblock-summary-path", has_text="/api/list").first).to_be_visible()
    expect(page.locator(".opblock").first).to_be_visible()
    assert page.locator(".opblock").count() >= 10
    assert refused == [], f"the page asked for assets off the machine: {refused}"


def test_the_docs_pages_reference_nothing_outside_the_machine(admin_client: Client) -> None:
    for url in ("/api/docs/", "/api/redoc/"):
        html = admin_client.get(url).content.decode()
        assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html, url
        assert "/static/drf_spectacular_sidecar/" in html, url
        assert "@latest" not in html, url
