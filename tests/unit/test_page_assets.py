"""The page works behind a route prefix: its files and API calls resolve against the application's own prefix."""

from __future__ import annotations

import re

import pytest

from serve_app.errors import NotFound
from serve_app.page import page_asset, page_html


def test_the_page_names_its_files_and_routes_relative_to_its_base() -> None:
    html = page_asset("index.html").data.decode()
    script = page_asset("page.js").data.decode()
    # A root-absolute URL ("/page/...", "/v1/...") would go to the root's application, not the page's.
    assert not re.findall(r'(?:src|href)="/', html)
    assert not re.findall(r'["`]/(?:v1|page)/', script)
    assert 'src="page/page.js"' in html and "v1/remove-background" in script


def test_the_base_is_the_route_prefix() -> None:
    assert b'<head>\n<base href="/">' in page_html("")
    assert b'<base href="/lite/">' in page_html("/lite")
    assert b'<base href="/a&quot;b/">' in page_html('/a"b/')  # a prefix is config, but it stays an attribute


@pytest.mark.parametrize("name", ["a\x00.css", "x" * 300 + ".js", "nothing.css", "page.js/", "../x.html"])
def test_a_name_that_is_no_page_file_is_not_found(name: str) -> None:
    with pytest.raises(NotFound):
        page_asset(name)
