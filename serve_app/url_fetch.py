"""Fetch images by URL for the ingress: address policy, redirects, timeouts and a streamed size cap."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from urllib.parse import urlsplit

import httpx

from serve_app.capped_read import read_capped
from serve_app.errors import UpstreamError, UpstreamTimeout, UrlRefused
from serve_app.settings import IngressSettings

# Labels of letters, digits, hyphens and underscores, dot-separated, with an optional final dot.
_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the host's IP addresses as strings; raises socket.gaierror when the host does not resolve.
# Injectable so tests can answer from a DNS server they control (rebinding) instead of the machine's resolver.
Resolver = Callable[[str, int], Awaitable[list[str]]]


def parse_networks(cidrs: Iterable[str]) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


# IPv6 prefixes whose last 32 bits are an IPv4 address that a translator or tunnel on the way may deliver to:
# NAT64's well-known prefix, and the deprecated IPv4-compatible form (::/96, less :: and ::1 themselves).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def is_address_allowed(address: IpAddress, allow: tuple[IpNetwork, ...]) -> bool:
    """Public unicast addresses pass; loopback, private, link-local, reserved and multicast need the allow-list. An
    IPv6 address that carries an IPv4 one (mapped, 6to4, NAT64, IPv4-compatible) is judged as that IPv4 address."""
    carried = _carried_ipv4(address)
    if any(candidate in network for candidate in (address, carried) if candidate is not None for network in allow):
        return True  # an allow-list entry names either form: 64:ff9b::/96, or the IPv4 network behind it
    address = carried or address
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:  # fec0::/10, deprecated, still routed
        return False
    return address.is_global and not address.is_multicast and not address.is_reserved


def _carried_ipv4(address: IpAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
        return address.ipv4_mapped
    if address.sixtofour is not None:  # 2002:7f00:1::1 reaches 127.0.0.1 through a 6to4 relay
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def split_url(url: str) -> tuple[str, int]:
    """Host (in ASCII) and port of an http(s) URL, or UrlRefused saying what is wrong with it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UrlRefused(f"malformed URL: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused(f"only http and https URLs are fetched, not {parts.scheme or 'a relative URL'!r}")
    if not parts.hostname:
        raise UrlRefused("the URL has no host")
    check_host_form(parts.hostname)
    try:
        parsed = httpx.URL(url)  # the client that fetches it must accept it too
        parsed.host  # noqa: B018 - decodes the name as the request will (a bad xn-- label raises here, not later)
    except (httpx.InvalidURL, UnicodeError) as error:
        raise UrlRefused(f"malformed URL: {error}") from None
    # An internationalised name as the request will carry it (punycode), so that DNS is asked for the very name
    # the request's Host header and TLS check use; an ASCII host (an IPv6 literal's zone included) as written.
    host = parts.hostname if parts.hostname.isascii() else parsed.raw_host.decode("ascii")
    return host, port or (443 if parts.scheme == "https" else 80)


def check_host_form(host: str) -> None:
    """Refuse hosts the fetcher cannot use as written: legacy numeric forms and names that are not DNS names.

    The system resolver reads 0177.0.0.1, 0x7f000001 or 127.1 (octal, hexadecimal, fewer than four parts) as
    IPv4 addresses, while HTTP clients and proxies read them differently or not at all: the address checked
    would not be the one a request goes to.
    """
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    try:
        socket.inet_aton(host)
    except OSError:
        pass
    else:
        raise UrlRefused(f"host {host!r} is a numeric address in a legacy form: write IPv4 addresses as four "
                         "decimal numbers (a.b.c.d)")
    try:
        ascii_host = host.encode("idna").decode("ascii")  # as the resolver encodes it
    except UnicodeError as error:
        raise UrlRefused(f"host {host!r} is not a valid host name: {error}") from None
    if not _HOST_NAME.fullmatch(ascii_host):
        raise UrlRefused(f"host {host!r} is not a valid host name")


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the operating system resolves `host` to (getaddrinfo, run off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def resolve_checked(host: str, port: int, allow: tuple[IpNetwork, ...],
                          resolver: Resolver = system_resolver) -> list[IpAddress]:
    """Every address `host` resolves to, refusing the URL if any of them is not allowed."""
    try:
        found = await resolver(host, port)
    except socket.gaierror as error:
        raise UpstreamError(f"cannot resolve host {host!r}: {error.strerror}") from None
    if not found:
        raise UpstreamError(f"host {host!r} resolves to no address")
    addresses = [ipaddress.ip_address(address.split("%")[0]) for address in found]
    refused = [str(address) for address in addresses if not is_address_allowed(address, allow)]
    if refused:
        raise UrlRefused(f"host {host!r} resolves to an address that is not allowed ({', '.join(refused)})")
    return addresses


def pinned_request(url: str, address: IpAddress) -> tuple[str, dict[str, str], dict[str, str]]:
    """The request for `url` sent to the already-checked `address`, so a second DNS answer cannot redirect it.

    The URL's host becomes the address; the Host header and (for https) the TLS server name stay the original
    name, so virtual hosting and certificate checks work as for the name. Both carry the name as DNS has it: an
    internationalised name in its ASCII (punycode) form, which is all a header may hold.
    """
    original = httpx.URL(url)
    literal = f"[{address}]" if address.version == 6 else str(address)
    name = original.host if original.host.isascii() else original.raw_host.decode("ascii")
    host = f"[{name}]" if ":" in name else name  # an IPv6 literal keeps its brackets in Host
    host_header = host if original.port is None else f"{host}:{original.port}"
    headers = {"Host": host_header}
    extensions = {}
    if original.scheme == "https":
        extensions["sni_hostname"] = name
        # The connection pool knows a connection by the address alone: kept open, it would carry the next request
        # for another name at that address without that name's certificate check.
        headers["Connection"] = "close"
    return str(original.copy_with(host=literal)), headers, extensions


# Decoded output per step: a few hundred bytes of gzip inflate to gigabytes, so the cap must see the bytes as they
# come out, not once a whole chunk is inflated.
DECODED_STEP_BYTES = 1 << 20
_ZLIB_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_REFUSED_ENCODINGS = ("br", "zstd", "compress")  # compressions without a bounded decoder here


async def decoded_body(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body as sent, or with one gzip or deflate layer undone a MiB at a time (the requests ask for none, but
    some hosts compress whatever they send); UpstreamError for stacked layers (`gzip, gzip`: each multiplies the
    size), compressions it cannot bound, or a compressed stream cut short. Other labels (`binary`, `aws-chunked`,
    which some object stores put on images) are taken as no encoding, as httpx takes them. httpx's own decoding
    inflates each chunk whole, unbounded."""
    labels = [name.strip().lower() for name in response.headers.get("content-encoding", "").split(",")]
    encodings = [name for name in labels if name in _ZLIB_WBITS or name in _REFUSED_ENCODINGS]
    if not encodings:
        async for chunk in response.aiter_raw():
            yield chunk
        return
    if len(encodings) > 1 or encodings[0] in _REFUSED_ENCODINGS:
        raise UpstreamError(f"the image host sent the image encoded as {', '.join(encodings)}; only one gzip or "
                            "deflate layer is taken")
    encoding = encodings[0]
    decoder = zlib.decompressobj(_ZLIB_WBITS[encoding])
    started = False
    try:
        async for chunk in response.aiter_raw():
            pending = chunk
            # Bytes after the stream's end (a second gzip member, padding) are left, as httpx leaves them.
            while pending and not decoder.eof:
                try:
                    out = decoder.decompress(pending, DECODED_STEP_BYTES)
                except zlib.error:
                    if started or encoding != "deflate":
                        raise
                    # "deflate" as some servers send it: a raw stream, without zlib's header (httpx takes it too).
                    decoder = zlib.decompressobj(-zlib.MAX_WBITS)
                    out = decoder.decompress(pending, DECODED_STEP_BYTES)
                started = True
                yield out
                pending = decoder.unconsumed_tail
    except zlib.error as error:
        raise UpstreamError(f"the image host's {encoding} body is corrupt: {error}") from None
    if started and not decoder.eof:
        raise UpstreamError(f"the image host's {encoding} body was cut short")


class ImageFetcher:
    """One per ingress replica: a pooled HTTP client plus the fetch policy from the settings."""

    def __init__(self, settings: IngressSettings, resolver: Resolver = system_resolver):
        self.settings = settings
        self.allow = parse_networks(settings.url_allow_networks)
        self.resolver = resolver
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            connect_s, read_s = self.settings.fetch_connect_timeout_s, self.settings.fetch_read_timeout_s
            timeout = httpx.Timeout(connect=connect_s, read=read_s, write=read_s, pool=connect_s)
            self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False,
                                             headers={"User-Agent": "serve-app-background-removal/0.1",
                                                      "Accept-Encoding": "identity"})
        return self._client

    async def fetch(self, url: str) -> bytes:
        """The body at `url`, following at most `max_redirects` redirects, each checked like the first."""
        try:
            async with asyncio.timeout(self.settings.fetch_total_timeout_s):
                return await self._follow(url)
        except TimeoutError:
            raise UpstreamTimeout(
                f"fetching the URL took longer than {self.settings.fetch_total_timeout_s:g} s") from None
        except httpx.TimeoutException as error:
            raise UpstreamTimeout(f"the image host timed out ({type(error).__name__})") from None
        except httpx.TransportError as error:
            raise UpstreamError(f"cannot reach the image host: {type(error).__name__}: {error}") from None
        except (httpx.InvalidURL, UnicodeError) as error:  # httpx reads a redirect's Location as it arrives
            raise UpstreamError(f"the image host redirected to an address that is no valid URL: {error}") from None

    async def _follow(self, url: str) -> bytes:
        for _ in range(self.settings.max_redirects + 1):
            host, port = split_url(url)
            addresses = await resolve_checked(host, port, self.allow, self.resolver)
            target, headers, extensions = pinned_request(url, addresses[0])
            async with self._http().stream("GET", target, headers=headers, extensions=extensions) as response:
                if response.is_redirect:
                    location = response.headers.get("location")
                    if not location:
                        raise UpstreamError(f"the image host answered {response.status_code} with no Location")
                    url = str(httpx.URL(url).join(location))  # relative to the name, not the pinned address
                    continue
                if response.status_code != 200:
                    raise UpstreamError(f"the image host answered HTTP {response.status_code}")
                return await read_capped(decoded_body(response), limit=self.settings.max_upload_bytes,
                                         declared_length=response.headers.get("content-length"),
                                         what="the remote image")
        raise UpstreamError(f"more than {self.settings.max_redirects} redirects")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
