"""gunicorn's logger, with the access log's line built from only what its format names.

For every request gunicorn's logger works out a value for each of its atoms (the time
formatted with strftime, the user of a Basic Authorization header decoded, one entry per
request header, response header and environ variable, about fifty here), then copies them
all into a dict that escapes quotes, and the format reads seven of them: 8% of the
instructions a web worker ran for a claim and its submit (bench/README.md, `claims_http`).
This logger gives the format the same values, each worked out when the format asks for it,
which takes back 60% of that. The lines are the same, byte for byte, for any
`access_log_format` (tests/feedback/test_access_log.py holds the two together); everything
else is gunicorn's.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from gunicorn import glogging


def _quoted(value: Any) -> Any:
    # As gunicorn's SafeAtoms: a double quote in a text value is escaped; others as they are.
    return value.replace('"', '\\"') if isinstance(value, str) else value


class _Atoms(dict[str, Any]):
    """gunicorn's atoms as its SafeAtoms gives them to the format ("-" for one it does not
    have), each computed on first use. Never empty: logging passes a mapping to the format
    only when it is truthy."""

    def __init__(
        self,
        logger: glogging.Logger,
        resp: Any,
        req: Any,
        environ: dict[str, Any],
        request_time: timedelta,
    ) -> None:
        super().__init__(l="-")
        self._logger = logger
        self._resp = resp
        self._req = req
        self._environ = environ
        self._time = request_time
        self._named: dict[str, Any] | None = None

    def __getitem__(self, key: str) -> Any:
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        if key.startswith("{"):
            value = self._headers_and_environ().get(key.lower(), "-")
        else:
            value = self._scalar(key)
        value = _quoted(value)
        self[key] = value
        return value

    def _scalar(self, key: str) -> Any:
        environ = self._environ
        resp = self._resp
        spent = self._time
        if key == "h":
            return environ.get("REMOTE_ADDR", "-")
        if key == "u":
            return self._logger._get_user(environ) or "-"
        if key == "t":
            return self._logger.now()
        if key == "r":
            return "{} {} {}".format(
                environ["REQUEST_METHOD"], environ["RAW_URI"], environ["SERVER_PROTOCOL"]
            )
        if key == "s":
            status = resp.status
            return status.split(None, 1)[0] if isinstance(status, str) else status
        if key in _ENVIRON:
            return environ.get(_ENVIRON[key])
        if key == "b":
            sent = getattr(resp, "sent", None)
            return (sent is not None and str(sent)) or "-"
        if key == "B":
            return getattr(resp, "sent", None)
        if key == "f":
            return environ.get("HTTP_REFERER", "-")
        if key == "a":
            return environ.get("HTTP_USER_AGENT", "-")
        if key == "T":
            return spent.seconds
        if key == "D":
            return (spent.seconds * 1000000) + spent.microseconds
        if key == "M":
            return (spent.seconds * 1000) + int(spent.microseconds / 1000)
        if key == "L":
            return "%d.%06d" % (spent.seconds, spent.microseconds)  # noqa: UP031 (gunicorn's)
        if key == "p":
            return f"<{os.getpid()}>"
        return "-"

    def _headers_and_environ(self) -> dict[str, Any]:
        """The {name}i, {name}o and {name}e atoms, as gunicorn's atoms() makes them."""
        if self._named is None:
            named: dict[str, Any] = {}
            req_headers = getattr(self._req, "headers", self._req)
            if hasattr(req_headers, "items"):
                req_headers = req_headers.items()
            named.update({f"{{{k.lower()}}}i": v for k, v in req_headers})
            resp_headers = self._resp.headers
            if hasattr(resp_headers, "items"):
                resp_headers = resp_headers.items()
            named.update({f"{{{k.lower()}}}o": v for k, v in resp_headers})
            named.update({f"{{{k.lower()}}}e": v for k, v in self._environ.items()})
            self._named = named
        return self._named


# The atoms that are an environ variable read as it is (None when absent).
_ENVIRON = {"m": "REQUEST_METHOD", "U": "PATH_INFO", "q": "QUERY_STRING", "H": "SERVER_PROTOCOL"}


class Logger(glogging.Logger):
    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        if not self.access_log_enabled:
            return
        try:
            self.access_log.info(
                self.cfg.access_log_format, _Atoms(self, resp, req, environ, request_time)
            )
        except Exception:  # as gunicorn's: a broken format is logged, the request goes on
            import traceback

            self.error(traceback.format_exc())
