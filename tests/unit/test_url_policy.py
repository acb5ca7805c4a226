"""URL refusal at the address-check level: nothing here opens a connection."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from serve_app.errors import UrlRefused
from serve_app.url_fetch import is_address_allowed, parse_networks, resolve_checked, split_url

NOTHING_ALLOWED = parse_networks([])


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
     "224.0.0.1", "240.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "ff02::1",
     # IPv4 addresses carried in IPv6: IPv4-compatible, 6to4, NAT64; the deprecated site-local and reserved ranges
     "::127.0.0.1", "::ffff:0:7f00:1", "2002:7f00:1::1", "2002:a9fe:a9fe::1", "64:ff9b::a00:1", "64:ff9b::7f00:1",
     "fec0::1", "::", "4000::1"],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_address_allowed(ipaddress.ip_address(address), NOTHING_ALLOWED)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808",
                                     "2002:808:808::1"])
def test_public_addresses_pass(address: str) -> None:
    assert is_address_allowed(ipaddress.ip_address(address), NOTHING_ALLOWED)


def test_allow_list_admits_exactly_its_ranges() -> None:
    allow = parse_networks(["127.0.0.0/8"])
    assert is_address_allowed(ipaddress.ip_address("127.0.0.1"), allow)
    assert is_address_allowed(ipaddress.ip_address("::ffff:127.0.0.2"), allow)
    assert not is_address_allowed(ipaddress.ip_address("10.0.0.1"), allow)


def test_an_allow_list_entry_admits_an_ipv4_address_carried_in_ipv6_in_either_form() -> None:
    carried = ipaddress.ip_address("64:ff9b::a00:1")  # NAT64's form of 10.0.0.1
    assert is_address_allowed(carried, parse_networks(["64:ff9b::/96"]))
    assert is_address_allowed(carried, parse_networks(["10.0.0.0/8"]))
    assert not is_address_allowed(carried, parse_networks(["192.168.0.0/16", "2001:db8::/32"]))


@pytest.mark.parametrize(
    ("url", "message"),
    [("ftp://127.0.0.1/a.png", "only http and https"), ("file:///etc/passwd", "only http and https"),
     ("/relative.png", "only http and https"), ("http:///nohost.png", "no host"),
     ("http://127.0.0.1:99999/", "malformed")],
)
def test_split_url_refuses_what_it_cannot_fetch(url: str, message: str) -> None:
    with pytest.raises(UrlRefused, match=message):
        split_url(url)


def test_split_url_defaults_ports() -> None:
    assert split_url("https://127.0.0.1/x") == ("127.0.0.1", 443)
    assert split_url("http://[::1]:8080/x") == ("::1", 8080)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "2130706433", "0x7f000001", "::1"])
def test_loopback_in_any_spelling_is_refused_by_default(host: str) -> None:
    with pytest.raises(UrlRefused, match="not allowed"):
        asyncio.run(resolve_checked(host, 80, NOTHING_ALLOWED))


def test_loopback_resolves_when_allowed() -> None:
    addresses = asyncio.run(resolve_checked("127.0.0.1", 80, parse_networks(["127.0.0.0/8"])))
    assert addresses == [ipaddress.ip_address("127.0.0.1")]


@pytest.mark.parametrize(
    ("url", "address", "target", "host", "sni"),
    [
        ("http://images.example/a.png?x=1", "203.0.113.7", "http://203.0.113.7/a.png?x=1", "images.example", None),
        ("https://images.example:8443/a.png", "2001:db8::5", "https://[2001:db8::5]:8443/a.png",
         "images.example:8443", "images.example"),
        # an internationalised name goes out as DNS has it (a header holds ASCII only), however it was written
        ("https://bücher.example/a.png", "203.0.113.7", "https://203.0.113.7/a.png", "xn--bcher-kva.example",
         "xn--bcher-kva.example"),
        ("http://xn--bcher-kva.example:8080/a.png", "203.0.113.7", "http://203.0.113.7:8080/a.png",
         "xn--bcher-kva.example:8080", None),
        ("http://[::1]:81/a.png", "::1", "http://[::1]:81/a.png", "[::1]:81", None),
    ],
)
def test_requests_go_to_the_checked_address_under_the_original_name(url, address, target, host, sni) -> None:
    from serve_app.url_fetch import pinned_request

    pinned_url, headers, extensions = pinned_request(url, ipaddress.ip_address(address))
    assert pinned_url == target and headers["Host"] == host
    assert extensions.get("sni_hostname") == sni
    # A TLS connection checked for one name is not kept for the next request to its address under another name.
    assert (headers.get("Connection") == "close") == (sni is not None)


@pytest.mark.parametrize(
    "host", ["0177.0.0.1", "127.0.0.01", "0x7f000001", "0x7f.0.0.1", "2130706433", "127.1", "10.1",
             "134744072", "0x08.0x08.0x08.0x08", "010.8.8.8"],
)
def test_legacy_numeric_hosts_are_refused_before_resolving(host: str) -> None:
    # Octal, hexadecimal and short forms: the resolver and the HTTP client read them differently, public or not.
    with pytest.raises(UrlRefused, match="legacy form"):
        split_url(f"http://{host}:8080/x.png")


@pytest.mark.parametrize(("url", "host"), [("http://8.8.8.8/x.png", "8.8.8.8"), ("http://[::1]:81/", "::1"),
                                           ("https://images.example/a.png", "images.example"),
                                           ("http://0-1.example/a.png", "0-1.example"),
                                           ("http://Bücher.example/a.png", "xn--bcher-kva.example")])
def test_canonical_addresses_and_names_pass_the_form_check(url: str, host: str) -> None:
    assert split_url(url)[0] == host


@pytest.mark.parametrize("host", ["exa mple.com", "a..b", "x" * 64 + ".example", "bad<host>.example"])
def test_hosts_that_are_not_dns_names_are_refused(host: str) -> None:
    with pytest.raises(UrlRefused, match="not a valid host name"):
        split_url(f"http://{host}/x.png")


@pytest.mark.parametrize("url", ["http://images.example/a\x01b.png", "http://images.example/" + "a" * 70_000])
def test_urls_the_http_client_cannot_parse_are_refused(url: str) -> None:
    with pytest.raises(UrlRefused, match="malformed"):
        split_url(url)
