"""A DNS server on loopback for tests: one name, TTL 0, a scripted answer per query (DNS rebinding on demand)."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import dns.asyncresolver
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset

from serve_app.url_fetch import Resolver


class ScriptedAnswers(socketserver.BaseRequestHandler):
    """Answers an A query for the server's name with its next scripted address; anything else is NXDOMAIN."""

    server: ScriptedDnsServer

    def handle(self) -> None:
        data, sock = self.request
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        self.server.queries.append(question.name.to_text())
        if question.name == self.server.name and question.rdtype == dns.rdatatype.A:
            address = self.server.answers[min(len(self.server.queries), len(self.server.answers)) - 1]
            # TTL 0: no resolver may cache the first answer, so each lookup reaches this script.
            response.answer.append(dns.rrset.from_text(question.name, 0, dns.rdataclass.IN, dns.rdatatype.A,
                                                       address))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        sock.sendto(response.to_wire(), self.client_address)


class ScriptedDnsServer(socketserver.UDPServer):
    """UDP on 127.0.0.1: the n-th query gets answers[n-1] (the last one once the script runs out)."""

    def __init__(self, name: str, answers: Sequence[str]):
        super().__init__(("127.0.0.1", 0), ScriptedAnswers)
        self.name = dns.name.from_text(name)
        self.answers = list(answers)
        self.queries: list[str] = []  # every question name asked, in order

    @property
    def port(self) -> int:
        return self.server_address[1]


@contextmanager
def scripted_dns(name: str, answers: Sequence[str]) -> Iterator[ScriptedDnsServer]:
    server = ScriptedDnsServer(name, answers)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def loopback_resolver(port: int) -> Resolver:
    """An ImageFetcher resolver that asks only the DNS server at 127.0.0.1:`port`, for A records, once."""
    stub = dns.asyncresolver.Resolver(configure=False)  # ignore /etc/resolv.conf: no real DNS server is asked
    stub.nameservers = ["127.0.0.1"]
    stub.port = port
    stub.lifetime = 2.0

    async def resolve(host: str, _port: int) -> list[str]:
        try:
            answer = await stub.resolve(host, "A", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer) as error:
            raise socket.gaierror(socket.EAI_NONAME, str(error)) from None
        return [record.address for record in answer]

    return resolve
