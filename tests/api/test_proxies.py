"""Issue 10, hole 14: forwarded headers count only from trusted proxies (`trust_proxy`, a list of
addresses or networks), X-Forwarded-For is read right to left through trusted hops, and the
origin is worked out once per request."""

from __future__ import annotations

import ipaddress
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from dmd.config import ConfigError, parse_proxies
from dmd.core import DM
from dmd.net import resolve
from tests.conftest import PASSWORD, add_user

NETS = [ipaddress.ip_network(n) for n in ("127.0.0.1/32", "10.0.0.0/8", "fd00::/8")]


def _request(peer: str, headers: dict[str, str] | None = None):
    transport = mock.Mock()
    transport.get_extra_info = lambda name, default=None: (peer, 40000) if name == "peername" else default
    return make_mocked_request("GET", "/", headers={"Host": "dm.example.org", **(headers or {})},
                               transport=transport)


@pytest.mark.parametrize("peer, headers, ip, https, host", [
    # A direct client: its headers are its own words, ignored.
    ("203.0.113.9", {"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https",
                     "X-Forwarded-Host": "evil.example", "X-Real-IP": "1.2.3.4"},
     "203.0.113.9", False, "dm.example.org"),
    # A trusted proxy: the address it appended is the client.
    ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https",
                   "X-Forwarded-Host": "dm.example.org:8443"},
     "203.0.113.9", True, "dm.example.org:8443"),
    # What the client wrote itself sits left of what its proxy appended: never reached.
    ("127.0.0.1", {"X-Forwarded-For": "6.6.6.6, 203.0.113.9"}, "203.0.113.9", False, "dm.example.org"),
    # Right to left through trusted hops (two proxies), stopping at the first untrusted.
    ("127.0.0.1", {"X-Forwarded-For": "6.6.6.6, 203.0.113.9, 10.1.2.3"}, "203.0.113.9", False,
     "dm.example.org"),
    ("10.0.0.5", {"X-Forwarded-For": "203.0.113.9, 10.9.9.9"}, "203.0.113.9", False, "dm.example.org"),
    # Every hop trusted: the left-most is the client.
    ("127.0.0.1", {"X-Forwarded-For": "10.0.0.7, 10.0.0.8"}, "10.0.0.7", False, "dm.example.org"),
    # Garbage where an address should be: the hop that passed it on is the client.
    ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9, not-an-address, 10.0.0.8"}, "10.0.0.8", False,
     "dm.example.org"),
    # Ports and IPv6 forms.
    ("::1", {"X-Forwarded-For": "[2001:db8::1]:443"}, "::1", False, "dm.example.org"),  # ::1 not trusted
    ("fd00::1", {"X-Forwarded-For": "[2001:db8::1]:443"}, "2001:db8::1", False, "dm.example.org"),
    ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9:5555"}, "203.0.113.9", False, "dm.example.org"),
    # X-Real-IP, only from a trusted proxy and only without X-Forwarded-For.
    ("127.0.0.1", {"X-Real-IP": "203.0.113.9"}, "203.0.113.9", False, "dm.example.org"),
    # One proto per hop: the one of the hop the client reached.
    ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9, 10.0.0.8", "X-Forwarded-Proto": "https, http"},
     "203.0.113.9", True, "dm.example.org"),
])
def test_forwarded_headers_from_trusted_peers_only(peer, headers, ip, https, host):
    origin = resolve(_request(peer, headers), NETS)
    assert (origin.ip, origin.https, origin.host) == (ip, https, host)


def test_several_header_lines_are_one_list_in_order():
    headers = CIMultiDict([("Host", "dm.example.org"), ("X-Forwarded-For", "6.6.6.6, 203.0.113.9"),
                           ("X-Forwarded-For", "10.0.0.8")])
    transport = mock.Mock()
    transport.get_extra_info = lambda name, default=None: ("127.0.0.1", 1) if name == "peername" else default
    assert resolve(make_mocked_request("GET", "/", headers=headers, transport=transport), NETS).ip == "203.0.113.9"


def test_no_trusted_proxies_means_the_peer():
    origin = resolve(_request("127.0.0.1", {"X-Forwarded-For": "203.0.113.9",
                                            "X-Forwarded-Proto": "https"}), [])
    assert (origin.ip, origin.https) == ("127.0.0.1", False)


@pytest.mark.parametrize("value, nets", [
    (["127.0.0.1", "10.0.0.0/8", "::1"], ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]),
    ("192.168.1.0/24, 172.17.0.1", ["192.168.1.0/24", "172.17.0.1/32"]),  # the environment's form
    (True, ["127.0.0.0/8", "::1/128"]),  # the old boolean: loopback only
    ("true", ["127.0.0.0/8", "::1/128"]),
    (False, []), ("", []), ([], []),
])
def test_trust_proxy_reads_lists_and_the_old_boolean(value, nets):
    assert parse_proxies(value)[0] == nets


@pytest.mark.parametrize("value", ["perhaps", ["10.0.0.0/8", "nginx"], 5, [1]])
def test_a_bad_trust_proxy_is_one_line_naming_the_entry(value):
    with pytest.raises(ConfigError) as e:
        parse_proxies(value)
    assert e.value.key == "trust_proxy" and "\n" not in str(e.value)


async def _failed_login_address(client, headers):
    r = await client.post("/api/v1/auth/login", json={"email": "u@example.org", "password": "wrong"},
                          headers=headers)
    assert r.status == 401
    return {k for k in client.app[DM].throttle._keys if k.startswith("ip:")}


async def test_a_real_dmd_honours_its_trusted_proxy_and_ignores_others(make_client):
    trusting = await make_client(trust_proxy=["127.0.0.1"])  # the test client connects from loopback
    await add_user(trusting, "u@example.org")
    fwd = {"X-Forwarded-For": "6.6.6.6, 203.0.113.9", "X-Forwarded-Proto": "https"}
    assert await _failed_login_address(trusting, fwd) == {"ip:203.0.113.9"}
    r = await trusting.post("/api/v1/auth/login", json={"email": "u@example.org", "password": PASSWORD},
                            headers=fwd)
    assert r.status == 200 and r.cookies["dm_session"]["secure"]
    other = await make_client(trust_proxy=["10.0.0.0/8"])  # loopback is not the proxy
    assert await _failed_login_address(other, fwd) == {"ip:127.0.0.1"}
    r = await other.post("/api/v1/auth/login", json={"email": "u@example.org", "password": PASSWORD},
                         headers=fwd)
    assert r.status == 200 and not r.cookies["dm_session"]["secure"]


async def test_the_origin_is_worked_out_once_per_request(make_client, monkeypatch):
    import dmd.net

    client = await make_client(trust_proxy=["127.0.0.1"])
    await add_user(client, "u@example.org")
    calls = []
    real = dmd.net.resolve

    def counted(request, proxies):
        calls.append(request.path)
        return real(request, proxies)

    monkeypatch.setattr(dmd.net, "resolve", counted)
    # A login reads the address (throttle, audit) and the scheme (cookies) several times.
    r = await client.post("/api/v1/auth/login", json={"email": "u@example.org", "password": PASSWORD},
                          headers={"X-Forwarded-For": "203.0.113.9"})
    assert r.status == 200
    assert calls == ["/api/v1/auth/login"]
