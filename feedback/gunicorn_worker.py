"""gunicorn's sync worker, waiting for connections so that one idle worker takes the next.

gunicorn's sync workers wait in select() on the shared listening socket, and Linux wakes every
waiting worker for each new connection: all race for it, one wins, the others go back to
waiting, each having woken up for nothing. Which one wins is left to the scheduler, so at less
than full load consecutive requests land on workers and database connections whose memory the
CPU's caches no longer hold. On a 2-core host, with one client, the app's own CPU per request
was 1.24-1.62 ms with 5 such workers against 0.90 ms with one (bench/README.md,
`claims_http`).

This worker waits with epoll and EPOLLEXCLUSIVE: Linux wakes one waiting worker per
connection, and always the first registered that is waiting, so under light load the same
worker, with its warm caches and its database connection's, serves request after request;
under heavy load every worker is busy and takes the next connection as soon as it is free,
as before. A sync worker waits only when idle, so no connection waits behind a busy worker
while another is free. Elsewhere than Linux it waits as gunicorn's does.
"""

from __future__ import annotations

import errno
import os
import select
from typing import Any

from gunicorn.workers import sync


class SyncWorker(sync.SyncWorker):
    _poller: Any = None

    def _ready_poller(self) -> Any:
        poller = select.epoll()
        self._by_fd = {}
        for waited in self.wait_fds:
            fd = waited if isinstance(waited, int) else waited.fileno()
            self._by_fd[fd] = waited
            # The listening sockets with EPOLLEXCLUSIVE; not the pipe through which signals
            # wake this worker (each worker has its own).
            exclusive = select.EPOLLEXCLUSIVE if waited is not self.PIPE[0] else 0
            poller.register(fd, select.EPOLLIN | exclusive)
        return poller

    def wait(self, timeout: float) -> Any:
        if not hasattr(select, "EPOLLEXCLUSIVE"):
            return super().wait(timeout)
        try:
            self.notify()
            if self._poller is None:
                self._poller = self._ready_poller()
            ready = [self._by_fd[fd] for fd, _ in self._poller.poll(timeout)]
            if self.PIPE[0] in ready:
                os.read(self.PIPE[0], 1)
            return ready
        except OSError as e:
            # As gunicorn's own wait().
            if e.args[0] == errno.EINTR:
                return self.sockets
            if e.args[0] == errno.EBADF:
                if self.nr < 0:
                    return self.sockets
                raise sync.StopWaiting from None
            raise
