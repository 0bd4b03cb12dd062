"""A request aiohttp's parser refuses is one WARNING line with the client's address in dmd's
log, not an ERROR with a traceback (anyone can send them; scanners do, by the thousand)."""

from __future__ import annotations

import logging
import socket

import pytest
from aiohttp.http_exceptions import BadHttpMessage

from dmd.serverlog import ServerLog
from tests.dmd_process import running_dmd

pytestmark = pytest.mark.slow


def _raw(port: int, request: bytes, *, hang_up: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        if hang_up:  # the client sends no more (a body cut short)
            s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        return got


BAD = [
    b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Evil: a\x00b\r\n\r\n",  # a NUL in a header
    b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n",  # too long
    b"GET /api/v1/health\x7f HTTP/1.1\r\nHost: x\r\n\r\n",  # a control character in the target
    b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
]


def test_malformed_requests_are_one_warning_line_each(tmp_path):
    with running_dmd(tmp_path / "data") as dmd:
        for request in BAD:
            reply = _raw(dmd.port, request)
            assert reply.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), reply[:200]
        # dmd still serves the well-formed requests after them.
        assert _raw(dmd.port, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") \
            .startswith(b"HTTP/1.1 200 ")
    log = dmd.log()
    assert "Traceback" not in log and "ERROR" not in log, log
    warnings = [line for line in log.splitlines() if "malformed HTTP request" in line]
    assert len(warnings) == len(BAD), log
    for line in warnings:
        assert " WARNING " in line and "from 127.0.0.1 refused with 400: " in line, line


CUT_SHORT = [
    (b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
     b"Content-Length: 100\r\n\r\n{\"email\""),
    (b"POST /api/v1/tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
     b"Authorization: Bearer dm_nope\r\nContent-Length: 100\r\n\r\n{"),
]


def test_a_client_gone_mid_body_is_one_warning_line(tmp_path):
    """A client that sends part of its body and hangs up made an ERROR with a traceback."""
    with running_dmd(tmp_path / "data") as dmd:
        for request in CUT_SHORT:
            _raw(dmd.port, request, hang_up=True)
        assert _raw(dmd.port, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") \
            .startswith(b"HTTP/1.1 200 ")
    log = dmd.log()
    assert "Traceback" not in log and "ERROR" not in log, log
    gone = [line for line in log.splitlines() if "went away" in line]
    assert gone and all(" WARNING " in line and "client 127.0.0.1 went away during POST '/api/v1/" in line
                        for line in gone), log


def test_other_server_errors_keep_their_traceback(caplog):
    """Only the parser's refusals are shortened: anything else aiohttp's server logs as an
    exception still comes with its traceback."""
    log = ServerLog(logging.getLogger("aiohttp.server"), {})
    with caplog.at_level(logging.WARNING, logger="aiohttp.server"):
        try:
            raise RuntimeError("a bug")
        except RuntimeError as e:
            log.exception("Error handling request from %s", "192.0.2.1", exc_info=e)
        log.exception("Error handling request from %s", "192.0.2.7",
                      exc_info=BadHttpMessage("Invalid header value char\n\x00"))
    bug, bad = caplog.records
    assert bug.levelno == logging.ERROR and bug.exc_info is not None
    assert bad.levelno == logging.WARNING and bad.exc_info is None
    assert bad.getMessage() == ("malformed HTTP request from 192.0.2.7 refused with 400: "
                                "'Invalid header value char\\n\\x00'")
