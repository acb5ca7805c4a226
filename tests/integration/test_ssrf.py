"""SSRF end to end through the real fetcher: only loopback servers, and the 'internal' one must never be hit.

127.0.0.2 plays a public host (the only allow-listed address); 127.0.0.1 plays an internal service. Every URL
below reaches the internal service in some spelling or through a redirect; none may be fetched.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from serve_app.errors import UpstreamError, UrlRefused
from serve_app.settings import IngressSettings
from serve_app.url_fetch import ImageFetcher
from tests.helpers import send_png
from tests.images import encode, red_square

PNG = encode(red_square())


class Recorder(BaseHTTPRequestHandler):
    """Serves /img, and /redirect?to=URL as a 302; remembers every path it was asked for."""

    hits: list[str]

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.hits.append(self.path)
        target = parse_qs(urlsplit(self.path).query).get("to")
        if self.path.startswith("/redirect") and target:
            self.send_response(302)
            self.send_header("Location", target[0])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        send_png(self, PNG)

    def log_message(self, *_: object) -> None:
        pass


def start(host: str) -> tuple[ThreadingHTTPServer, list[str]]:
    hits: list[str] = []
    server = ThreadingHTTPServer((host, 0), type("Handler", (Recorder,), {"hits": hits}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, hits


@pytest.fixture(scope="module")
def servers() -> Iterator[dict]:
    internal, internal_hits = start("127.0.0.1")
    public, public_hits = start("127.0.0.2")
    yield {"internal": internal.server_address[1], "public": public.server_address[1],
           "internal_hits": internal_hits, "public_hits": public_hits}
    internal.shutdown()
    public.shutdown()


def fetch(url: str, allow: tuple[str, ...] = ("127.0.0.2/32",)) -> bytes:
    fetcher = ImageFetcher(IngressSettings(url_allow_networks=allow, fetch_total_timeout_s=10))

    async def run() -> bytes:
        try:
            return await fetcher.fetch(url)
        finally:
            await fetcher.close()

    return asyncio.run(run())


def attack_urls(internal: int, public: int) -> list[str]:
    direct = [f"http://{host}:{internal}/secret" for host in (
        "127.0.0.1", "localhost", "[::1]", "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0.0.0.0", "[::]",
        "127.0.0.3", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[0:0:0:0:0:ffff:127.0.0.1]", "user:pw@127.0.0.1")]
    schemes = [f"ftp://127.0.0.2:{public}/img", "file:///etc/passwd", f"gopher://127.0.0.1:{internal}/_",
               f"dict://127.0.0.1:{internal}/info", "http:///secret", "javascript:alert(1)",
               "data:image/png;base64,iVBORw0KGgo="]

    def via(target: str) -> str:
        return f"http://127.0.0.2:{public}/redirect?to={target}"

    redirects = [via(f"http://127.0.0.1:{internal}/secret"), via(f"http://localhost:{internal}/secret"),
                 via(f"http://2130706433:{internal}/secret"), via(f"http://[::ffff:127.0.0.1]:{internal}/secret"),
                 via(via(f"http://127.0.0.1:{internal}/secret").replace("&", "%26").replace("?", "%3F")),
                 via("file:///etc/passwd"), via(f"ftp://127.0.0.1:{internal}/secret")]
    return direct + schemes + redirects


def test_no_spelling_or_redirect_reaches_the_internal_service(servers: dict) -> None:
    urls = attack_urls(servers["internal"], servers["public"])
    assert len(urls) >= 25
    outcomes = {}
    for url in urls:
        with pytest.raises((UrlRefused, UpstreamError)) as refused:
            fetch(url)
        outcomes[url] = type(refused.value).__name__
    assert servers["internal_hits"] == [], "the internal service was reached"
    # Everything is refused by the policy itself, not by a failure to connect.
    assert set(outcomes.values()) == {"UrlRefused"}, outcomes


def test_the_allow_listed_host_is_fetched(servers: dict) -> None:
    assert fetch(f"http://127.0.0.2:{servers['public']}/img") == PNG
    assert "/img" in servers["public_hits"]


def test_redirect_chains_are_bounded(servers: dict) -> None:
    url = f"http://127.0.0.2:{servers['public']}/img"
    for _ in range(4):  # four redirects before the image; the limit is three
        url = f"http://127.0.0.2:{servers['public']}/redirect?to={url.replace('&', '%26').replace('?', '%3F')}"
    with pytest.raises(UpstreamError, match="more than 3 redirects"):
        fetch(url)


@pytest.mark.parametrize("location", ["http://xn--/img", "http://[::1/img"])
def test_a_redirect_to_no_valid_url_is_the_image_hosts_error(servers: dict, location: str) -> None:
    with pytest.raises(UpstreamError):  # a 502, not an internal error
        fetch(f"http://127.0.0.2:{servers['public']}/redirect?to={location}")


@pytest.mark.parametrize("host", ["0177.0.0.1", "0x7f000001", "2130706433", "127.1", "127.0.0.01"])
def test_legacy_numeric_hosts_are_refused_even_on_an_allowed_network(servers: dict, host: str) -> None:
    # With loopback allowed, the address would pass the policy; the host form itself is refused (400, not 500).
    with pytest.raises(UrlRefused, match="legacy form"):
        fetch(f"http://{host}:{servers['internal']}/x.png", allow=("127.0.0.0/8",))
    assert "/x.png" not in servers["internal_hits"]
