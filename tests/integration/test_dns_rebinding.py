"""DNS rebinding end to end: a local DNS server answers the allowed address first and the internal one next.

127.0.0.2 plays a public host (the only allow-listed address); 127.0.0.1 plays an internal service listening on
the same port, so a fetcher that looked the name up again at connect time would land on it. The fetcher must
connect to the address it checked, asking DNS exactly once per fetch. Every packet stays on loopback: the only
resolver is the test's own DNS server on 127.0.0.1, and any lookup through the machine's resolver fails the test.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from serve_app.errors import UrlRefused
from serve_app.settings import IngressSettings
from serve_app.url_fetch import ImageFetcher, Resolver, system_resolver
from tests.dns_server import loopback_resolver, scripted_dns
from tests.integration.test_ssrf import PNG, Recorder

NAME = "rebind.test"  # RFC 6761 reserves .test: no real DNS server owns it
PUBLIC, INTERNAL = "127.0.0.2", "127.0.0.1"


class OffLoopbackLookup(AssertionError):
    """A name went to the machine's resolver, which might send a query off this machine."""


@pytest.fixture(autouse=True)
def no_system_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only loopback IP literals may pass through getaddrinfo; names must go to the test's DNS server."""
    real_getaddrinfo = socket.getaddrinfo

    def check(host: object) -> None:
        text = host.decode() if isinstance(host, bytes) else str(host)
        try:
            if ipaddress.ip_address(text).is_loopback:
                return
        except ValueError:
            pass
        raise OffLoopbackLookup(f"getaddrinfo({text!r}) would ask the machine's resolver")

    def guarded_getaddrinfo(host, *args, **kwargs):
        check(host)
        return real_getaddrinfo(host, *args, **kwargs)

    async def guarded_loop_getaddrinfo(_loop, host, *args, **kwargs):
        check(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", guarded_loop_getaddrinfo)


def serve(host: str, port: int) -> tuple[ThreadingHTTPServer, list[str]]:
    hits: list[str] = []
    server = ThreadingHTTPServer((host, port), type("Handler", (Recorder,), {"hits": hits}))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, hits


@pytest.fixture
def servers() -> Iterator[dict]:
    """The public and the internal server on one port number; the port is retried if 127.0.0.1 has it taken."""
    for _ in range(5):
        public, public_hits = serve(PUBLIC, 0)
        port = public.server_address[1]
        try:
            internal, internal_hits = serve(INTERNAL, port)
            break
        except OSError:
            public.shutdown()
            public.server_close()
    else:
        pytest.fail("no port free on both 127.0.0.1 and 127.0.0.2")
    yield {"port": port, "public_hits": public_hits, "internal_hits": internal_hits}
    for server in (public, internal):
        server.shutdown()
        server.server_close()


def fetch_each(urls: list[str], resolver: Resolver) -> list[bytes | Exception]:
    """Fetch the URLs in order with one fetcher (one connection pool); each result is the body or the error."""
    fetcher = ImageFetcher(IngressSettings(url_allow_networks=(f"{PUBLIC}/32",), fetch_total_timeout_s=10),
                           resolver=resolver)

    async def run() -> list[bytes | Exception]:
        results: list[bytes | Exception] = []
        try:
            for url in urls:
                try:
                    results.append(await fetcher.fetch(url))
                except UrlRefused as error:
                    results.append(error)
        finally:
            await fetcher.close()
        return results

    return asyncio.run(run())


def test_a_rebinding_answer_never_redirects_the_connection(servers: dict) -> None:
    url = f"http://{NAME}:{servers['port']}/img"
    with scripted_dns(NAME, [PUBLIC, INTERNAL]) as dns:
        first, second = fetch_each([url, url], loopback_resolver(dns.port))
    assert servers["internal_hits"] == [], "the rebinding answer reached the internal service"
    # First fetch: one lookup (127.0.0.2), and the connection went to that checked address.
    assert first == PNG
    assert servers["public_hits"] == ["/img"]
    # Second fetch: TTL 0, so the fetcher asks again, gets 127.0.0.1 and refuses before connecting. Two
    # queries in all: a fetcher that looked the name up twice in one fetch would have made three.
    assert isinstance(second, UrlRefused) and INTERNAL in str(second)
    assert dns.queries == [f"{NAME}.", f"{NAME}."], "DNS must be asked exactly once per fetch"


def test_an_internal_first_answer_is_refused(servers: dict) -> None:
    with scripted_dns(NAME, [INTERNAL, PUBLIC]) as dns:
        (result,) = fetch_each([f"http://{NAME}:{servers['port']}/img"], loopback_resolver(dns.port))
    assert isinstance(result, UrlRefused) and INTERNAL in str(result)
    assert dns.queries == [f"{NAME}."]
    assert servers["public_hits"] == [] and servers["internal_hits"] == []


def test_the_guard_stops_lookups_through_the_machine_resolver(servers: dict) -> None:
    with pytest.raises(OffLoopbackLookup):
        socket.getaddrinfo(NAME, 80)
    with pytest.raises(OffLoopbackLookup):
        fetch_each([f"http://{NAME}:{servers['port']}/img"], system_resolver)
    assert servers["public_hits"] == [] and servers["internal_hits"] == []
