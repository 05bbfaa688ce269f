"""The web process's access log: the same lines as gunicorn's own logger writes."""

from __future__ import annotations

import base64
import logging
import re
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn import glogging
from gunicorn.config import Config
from hypothesis import given, settings
from hypothesis import strategies as st

from feedback.access_log import Logger

DEPLOYED = '%(h)s "%(r)s" %(s)s %(B)s "%(a)s" %(D)sus %(p)s'
EVERY_ATOM = " ".join(
    f"%({name})s" for name in ["h", "l", "u", "r", "s", "m", "U", "q", "H", "b", "B", "f"]
) + (
    ' "%(a)s" %(T)s %(D)s %(M)s %(L)s %(p)s %(x)s'
    " %({x-trace}i)s %({X-TRACE}i)s %({content-type}o)s %({nothing}o)s"
    " %({remote_addr}e)s %({raw_uri}e)s %({wsgi.version}e)s %({absent}e)s %({odd}x)s"
)

text = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=20)
header_name = st.sampled_from(["X-TRACE", "X-Trace", "USER-AGENT", "CONTENT-TYPE", "ACCEPT"])


@st.composite
def requests(draw: Any) -> tuple[Any, Any, dict[str, Any], timedelta]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": draw(st.sampled_from(["GET", "POST", "PUT"])),
        "RAW_URI": "/" + draw(text),
        "SERVER_PROTOCOL": draw(st.sampled_from(["HTTP/1.0", "HTTP/1.1"])),
        "wsgi.version": (1, 0),
    }
    optional = {
        "REMOTE_ADDR": st.sampled_from(["127.0.0.1", "::1"]),
        "PATH_INFO": text,
        "QUERY_STRING": text,
        "HTTP_USER_AGENT": text,
        "HTTP_REFERER": text,
        "HTTP_AUTHORIZATION": st.one_of(
            text,
            st.builds(
                lambda user: "Basic " + base64.b64encode(f"{user}:pw".encode()).decode(), text
            ),
            st.just("Basic not-base64!"),
            st.just("Bearer efk_abc"),
        ),
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            environ[name] = draw(values)
    status = draw(
        st.one_of(st.sampled_from(["200 OK", "201 Created", "404 Not Found"]), st.just(204))
    )
    sent = draw(st.one_of(st.none(), st.integers(0, 10**9)))
    resp = SimpleNamespace(
        status=status,
        sent=sent,
        headers=draw(st.lists(st.tuples(header_name, text), max_size=3)),
    )
    req = SimpleNamespace(headers=draw(st.lists(st.tuples(header_name, text), max_size=4)))
    spent = timedelta(microseconds=draw(st.integers(0, 10**8)))
    return resp, req, environ, spent


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _logger(kind: type[glogging.Logger], access_log_format: str) -> glogging.Logger:
    cfg = Config()
    cfg.set("accesslog", "/dev/null")
    cfg.set("access_log_format", access_log_format)
    return kind(cfg)


@pytest.fixture
def lines():
    handler = _Lines()
    logging.getLogger("gunicorn.access").addHandler(handler)
    yield handler.lines
    logging.getLogger("gunicorn.access").removeHandler(handler)


@pytest.mark.parametrize("access_log_format", [DEPLOYED, EVERY_ATOM, Config().access_log_format])
@settings(max_examples=150, deadline=None)
@given(request=requests())
def test_a_line_is_the_one_gunicorns_logger_writes(access_log_format, request):
    handler = _Lines()
    access = logging.getLogger("gunicorn.access")
    access.addHandler(handler)
    try:
        for kind in (glogging.Logger, Logger):
            _logger(kind, access_log_format).access(*request)
    finally:
        access.removeHandler(handler)
    theirs, ours = handler.lines
    # The time is read once by each, so a second may pass between them.
    when = re.compile(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]")
    assert when.sub("[time]", ours) == when.sub("[time]", theirs)
    assert "[time]" not in theirs or when.search(ours)


def test_the_deployed_format_names_what_it_logs(lines):
    resp = SimpleNamespace(status="201 Created", sent=42, headers=[("Content-Type", "x")])
    req = SimpleNamespace(headers=[("USER-AGENT", 'say "hi"')])
    environ = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": "/api/v1/campaigns/7/next/",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_USER_AGENT": 'say "hi"',
    }
    _logger(Logger, DEPLOYED).access(resp, req, environ, timedelta(microseconds=1234))
    (line,) = lines
    pid = re.fullmatch(
        r'127\.0\.0\.1 "POST /api/v1/campaigns/7/next/ HTTP/1\.1" 201 42 "say \\"hi\\"" 1234us <(\d+)>',
        line,
    )
    assert pid, line


def test_no_line_with_the_access_log_off(lines):
    cfg = Config()
    cfg.set("access_log_format", DEPLOYED)
    resp = SimpleNamespace(status="200 OK", sent=1, headers=[])
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/", "SERVER_PROTOCOL": "HTTP/1.1"}
    Logger(cfg).access(resp, SimpleNamespace(headers=[]), environ, timedelta())
    assert lines == []
