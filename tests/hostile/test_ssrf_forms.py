"""SSRF through URL import (issue 14): every address form that reaches a private host is refused
before any connection. `ipaddress.is_global` alone passes NAT64, 6to4, IPv4-compatible, site-local
and multicast addresses; core.imports.urls.address_problem adds the deny list. Checked on the checker
directly, on vetted_address and through import_urls (first hop and a redirect hop) with a resolver
that answers these addresses, while a stubbed connection records every address URL import tried
to reach: nothing but 127.0.0.1 is ever contacted."""

from __future__ import annotations

import ipaddress
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.errors import InvalidInput
from core.imports.urls import address_problem, import_urls, vetted_address
from tests.factories import ADMIN, drawn_image_bytes
from tests.hostile.tally import TALLY

# case: (address a hostile name resolves to, fragment of the refusal)
REFUSED = {
    "v4_loopback": ("127.0.0.5", "a loopback address"),
    "v4_private_10": ("10.1.2.3", "a private address"),
    "v4_private_172": ("172.16.5.4", "a private address"),
    "v4_private_192": ("192.168.1.1", "a private address"),
    "v4_metadata": ("169.254.169.254", "link-local (cloud metadata)"),
    "v4_multicast": ("224.0.0.251", "a multicast address"),
    "v4_multicast_global": ("233.252.0.1", "a multicast address"),
    "v4_reserved": ("240.0.0.1", "a reserved address"),
    "v4_broadcast": ("255.255.255.255", "a reserved address"),
    "v4_unspecified": ("0.0.0.0", "an unspecified address"),
    "v4_this_network": ("0.1.2.3", "a private address"),
    "v4_shared_cgnat": ("100.64.0.1", "not a globally reachable address"),
    "v6_loopback": ("::1", "a loopback address"),
    "v6_unspecified": ("::", "an unspecified address"),
    "v6_link_local": ("fe80::1", "link-local"),
    "v6_unique_local": ("fd12:3456::1", "a private address"),
    "v6_multicast_link": ("ff02::1", "a multicast address"),
    "v6_multicast_global": ("ff0e::1", "a multicast address"),
    "v6_site_local": ("fec0::1", "a site-local address"),
    "v6_discard": ("100::1", "a reserved address"),
    "v6_documentation": ("2001:db8::1", "a private address"),
    "mapped_private": ("::ffff:10.0.0.1", "the IPv4-mapped form of 10.0.0.1, a private address"),
    "mapped_loopback": ("::ffff:127.0.0.1", "the IPv4-mapped form of 127.0.0.1, a loopback address"),
    "mapped_metadata": ("::ffff:169.254.169.254", "the IPv4-mapped form of 169.254.169.254"),
    "compatible_private": ("::10.0.0.1", "the IPv4-compatible form of 10.0.0.1, a private address"),
    "compatible_loopback": ("::127.0.0.1", "the IPv4-compatible form of 127.0.0.1, a loopback address"),
    "nat64_private": ("64:ff9b::10.0.0.1", "the NAT64 form of 10.0.0.1, a private address"),
    "nat64_metadata": ("64:ff9b::169.254.169.254", "the NAT64 form of 169.254.169.254"),
    "nat64_loopback": ("64:ff9b::127.0.0.1", "the NAT64 form of 127.0.0.1, a loopback address"),
    "nat64_local_use": ("64:ff9b:1::8.8.8.8", "a local-use NAT64 address"),
    "sixtofour_private": ("2002:c0a8:101::1", "the 6to4 form of 192.168.1.1, a private address"),
    "sixtofour_loopback": ("2002:7f00:1::1", "the 6to4 form of 127.0.0.1, a loopback address"),
    # Teredo carries its server and (bit-inverted) its client: 2001:0:<server>:<flags>:<port>:<~client>
    "teredo_private_client": (f"2001:0:808:808:8000:63bf:{0xffff - 0x0a00:x}:{0xffff - 0x0001:x}",
                              "the Teredo form of 10.0.0.1, a private address"),
    "teredo_private_server": ("2001:0:a00:1:8000:63bf:f7f7:f7f7", "the Teredo form of 10.0.0.1"),
    "teredo_public": ("2001:0:808:808:8000:63bf:f7f7:f7f7", "a Teredo address that is not globally reachable"),
}
# Public addresses the check lets through (the stubbed connection then stops them: no traffic).
PUBLIC = ["93.184.216.34", "2606:4700:4700::1111", "::ffff:93.184.216.34", "64:ff9b::93.184.216.34"]
IMAGE = drawn_image_bytes(31, (40, 30))


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_checker_refuses_each_form(case):
    address, fragment = REFUSED[case]
    problem = address_problem(ipaddress.ip_address(address))
    TALLY.tried += 1
    assert problem and fragment in problem, (address, problem)


@pytest.mark.parametrize("address", PUBLIC)
def test_the_checker_passes_public_addresses(address):
    assert address_problem(ipaddress.ip_address(address)) is None


def host_of(case: str) -> str:
    return f"{case.replace('_', '-')}.ssrf.test"


@pytest.fixture
def resolver(monkeypatch):
    """Names under .ssrf.test resolve to the case's address (public-N.ssrf.test to PUBLIC[N]); every
    other name resolves as usual."""
    real = socket.getaddrinfo
    table = {host_of(case): address for case, (address, _fragment) in REFUSED.items()}
    table.update({f"public-{n}.ssrf.test": address for n, address in enumerate(PUBLIC)})

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in table:
            return real(host, port, *args, **kwargs)
        address = table[host]
        if ":" in address:
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


@pytest.fixture
def connections(monkeypatch):
    """Every address URL import opens a connection to; anything but 127.0.0.1 is stopped unsent."""
    import urllib3

    original = urllib3.HTTPConnectionPool.urlopen
    seen: list[str] = []

    def urlopen(pool, *args, **kwargs):
        seen.append(pool.host)
        if pool.host != "127.0.0.1":
            raise urllib3.exceptions.HTTPError("stopped by the test before any traffic")
        return original(pool, *args, **kwargs)

    monkeypatch.setattr(urllib3.HTTPConnectionPool, "urlopen", urlopen)
    return seen


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_vetted_address_refuses_each_form_from_the_resolver(resolver, case):
    _address, fragment = REFUSED[case]
    with pytest.raises(InvalidInput, match="refused: ") as refused:
        vetted_address(host_of(case), 80, [])
    assert fragment in str(refused.value) and "URL_ALLOW_LIST" in str(refused.value)


def test_the_allow_list_lets_a_mapped_address_through_but_no_other_form(resolver):
    private_v4 = ["10.0.0.0/8", "192.168.0.0/16"]
    assert vetted_address(host_of("mapped_private"), 80, private_v4) == "::ffff:10.0.0.1"
    for case in ("nat64_private", "sixtofour_private", "compatible_private"):  # an allowed IPv4 range
        with pytest.raises(InvalidInput, match="refused"):  # does not open its other IPv6 forms
            vetted_address(host_of(case), 80, private_v4)
    assert vetted_address(host_of("nat64_private"), 80, ["64:ff9b::/96"]) == "64:ff9b::10.0.0.1"


class RedirectHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path.startswith("/to/"):  # /to/<host>: a redirect hop to that host
            self.send_response(302)
            self.send_header("Location", f"http://{self.path[4:]}/x.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(IMAGE)))
        self.end_headers()
        self.wfile.write(IMAGE)


@pytest.fixture
def local_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RedirectHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_import_refuses_every_form_before_connecting_and_imports_the_good_url(
        embedded_stack, resolver, connections, local_server):
    # A case whose address is 127.0.0.1 itself (mapped) would be allowed by the allow-list that lets
    # the good URL through: those run in a second import without it.
    loopback = {case for case, (address, _f) in REFUSED.items()
                if (ip := ipaddress.ip_address(address)).version == 6 and ip.ipv4_mapped
                and ip.ipv4_mapped.is_loopback}
    good = f"{local_server}/photo.png"
    for allow, cases in ((["127.0.0.1"], sorted(set(REFUSED) - loopback)), ([], sorted(loopback))):
        first_hops = [f"http://{host_of(case)}/x.png" for case in cases]
        redirects = [f"{local_server}/to/{host_of(case)}" for case in cases] if allow else []
        urls = [*first_hops, *redirects, *([good] if allow else [])]
        summary = import_urls(actor=ADMIN, urls=urls, allow_list=allow, timeout_s=5, max_bytes=100_000)
        TALLY.tried += len(urls)
        by_url = {result["url"]: result for result in summary["results"]}
        for case in cases:
            for url in [f"http://{host_of(case)}/x.png", *([f"{local_server}/to/{host_of(case)}"] if allow else [])]:
                result = by_url[url]
                if result["status"] != "rejected" or REFUSED[case][1] not in (result["error"] or ""):
                    TALLY.crashes.append(f"{case}: {result}")
                assert result["status"] == "rejected" and REFUSED[case][1] in result["error"], (case, result)
        if allow:
            if by_url[good]["status"] != "imported":
                TALLY.lost.append(good)
            assert by_url[good]["status"] == "imported", by_url[good]
    assert set(connections) == {"127.0.0.1"}, connections  # only the local server was ever contacted


def test_public_addresses_pass_the_check_and_reach_the_connection(embedded_stack, resolver, connections):
    """The control for the test above: a public address gets past the check to the (stubbed)
    connection, so an address missing from `connections` really was refused before connecting."""
    urls = [f"http://public-{n}.ssrf.test/x.png" for n in range(len(PUBLIC))]
    summary = import_urls(actor=ADMIN, urls=urls, allow_list=[], timeout_s=5, max_bytes=100_000)
    assert all("stopped by the test" in result["error"] for result in summary["results"]), summary["results"]
    assert sorted(connections) == sorted(PUBLIC)
