"""Django's PostgreSQL backend, with a health check that needs no round trip when none is due.

With CONN_HEALTH_CHECKS, Django checks a kept connection before a request's first query
(`SELECT 1`), so a database that restarted since the last request costs a reconnection, not a
failed request. That is one more round trip per request: on a claim and a submit, two of
ten, each a switch to PostgreSQL and back on a busy 2-core host.

A server that ends a connection (a restart, a failover, `pg_terminate_backend`, an idle
timeout) says why and closes it, so the socket of an idle connection it ended has something
to read: the error, then the end of the stream; a network that drops the connection makes it
readable with an error. An idle connection with nothing to read is used as it is. Anything
else (something to read, a connection not idle or marked broken) goes to Django's `SELECT 1`,
which takes it or closes it, as before. Nothing is read here, so nothing is lost: a notice
waiting on a healthy connection is read by that `SELECT 1` as it would have been.

A path that fails without a word (a host that vanished, a silent firewall) is not seen here,
and not by `SELECT 1` either until the network gives up; the connect timeout and TCP
keepalives bound that, as before.
"""

from __future__ import annotations

import select
from typing import Any

from django.db.backends.postgresql import base
from psycopg import pq


def connection_is_quiet(connection: Any) -> bool:
    """An idle connection, not broken, with nothing from the server waiting on its socket."""
    if connection.closed or connection.broken:
        return False
    if connection.info.transaction_status != pq.TransactionStatus.IDLE:
        return False
    if not hasattr(select, "poll"):  # Windows: Django's SELECT 1 decides
        return False
    poller = select.poll()
    # POLLERR and POLLHUP are always reported.
    poller.register(connection.fileno(), select.POLLIN | select.POLLPRI)
    return not poller.poll(0)


class DatabaseWrapper(base.DatabaseWrapper):
    def close_if_health_check_failed(self) -> None:
        checked = self.health_check_done  # type: ignore[has-type]
        if not checked and self.connection is not None and connection_is_quiet(self.connection):
            # Nothing for SELECT 1 to find: checked for this request, as its passing would.
            self.health_check_done = True
        super().close_if_health_check_failed()
