"""Claims over HTTP: the claim -> submit loop as an API client sees it, against gunicorn.

The `claims` benchmark times the service path without HTTP. This one starts the web process as
deployed (`gunicorn -c deploy/gunicorn.conf.py`: sync workers, 2 x cores + 1 of them, the app
preloaded, the access log on), and clients on the same machine, each an expert with an API key
on one keep-alive HTTP/1.1 client (sync workers close each connection after its response, so
each request opens a new one, as behind a proxy), that claim (`POST campaigns/{id}/next/`) and
submit a preference for the first response shown (`POST assignments/{id}/submit/`) in a
closed loop, as fast as the server answers, for CLIENTS clients at once in turn (1, 8 and 64 by
default: Label Studio's figures in bench/README.md are for one annotator and eight). Then
PACED_CLIENTS clients (64) offer together each of PACED_SHARES (30% and 60%) of the most loops
per second a closed loop reached at the first size, the same rates at every size, each client
claiming on a fixed schedule: latency is counted from when a claim was due, however late it
started, so this is the latency experts see on a server that keeps up, at two levels of load,
and the one to compare across sizes.

At each size (SIZES items, overlap 3, loaded with COPY after a finished earlier campaign, as in
`claims`), for each client count: WARMUP seconds, then SECONDS measured. A loop counts when
it started in the window. Reported: loops per second; next-item and submit latency (p50, p90,
p99, max) as the client measured it, connection included; every answer that was not 200 or
201, by status; the CPU per loop of the web processes (master and workers), of the database's
backends, of the clients themselves and of the whole machine, read from /proc over the window
(with how many web workers and backends started or ended within it, whose CPU is not counted);
the claims over 15 ms by the second they were due in, when the server's vacuums ended, and the
checkpoints, WAL and full-page images written in the window, so a burst of slow claims can be
set against what the server did; and after the runs the invariants of `claims` on the
campaign. The server vacuums the tables
claims change every VACUUM_SECONDS, as in `claims` (this machine's server runs with
autovacuum off). Clients, server and database share the machine's cores, as they do when a
benchmark runs on one host; the clients' own share is reported.
"""

from __future__ import annotations

import http.client
import json
import math
import multiprocessing as mp
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SIZES = [int(s) for s in os.environ.get("BENCH_HTTP_SIZES", "110000,1000000").split(",")]
CLIENTS = [int(s) for s in os.environ.get("BENCH_HTTP_CLIENTS", "1,8,64").split(",")]
SECONDS = float(os.environ.get("BENCH_HTTP_SECONDS", "15"))
WARMUP = float(os.environ.get("BENCH_HTTP_WARMUP", "3"))
# Clients per process (threads); more clients than this run in more processes.
THREADS = int(os.environ.get("BENCH_HTTP_THREADS", "8"))
# Clients of the paced runs, and the rates they offer together, each a share of the most loops
# per second the closed loops reached at the first size (the same rates at every size).
PACED_CLIENTS = int(os.environ.get("BENCH_HTTP_PACED_CLIENTS", "64"))
PACED_SHARES = [
    float(s) for s in os.environ.get("BENCH_HTTP_PACED_SHARES", "0.3,0.6").split(",") if s
]
# A claim slower than this is counted by the second of the window it was due in.
SLOW_SECONDS = 0.015
# A paced run that falls behind goes on with its window's loops for at most this long after it.
LATE_LIMIT = 10.0
START_TIMEOUT = 60.0
ROOT = Path(__file__).resolve().parent.parent


# --- the web process ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_settings() -> dict[str, str]:
    """The web server's settings taken from this environment (deploy/gunicorn.conf.py reads
    them), to measure another shape of it: WEB_CONCURRENCY, GUNICORN_THREADS and the like,
    and whether claims wait for the disk (CLAIM_SYNCHRONOUS_COMMIT). The address is the
    benchmark's own."""
    return {
        name: value
        for name, value in sorted(os.environ.items())
        if (name.startswith("GUNICORN_") and name != "GUNICORN_BIND")
        or name in {"WEB_CONCURRENCY", "CLAIM_SYNCHRONOUS_COMMIT"}
    }


class Web:
    """gunicorn with deploy/gunicorn.conf.py, on loopback, pointed at the bench database."""

    def __init__(self, database_url: str, log: Path) -> None:
        self.port = _free_port()
        self.database_url = database_url
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "DJANGO_SETTINGS_MODULE": "feedback.settings",
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "127.0.0.1",
            "DATABASE_URL": database_url,
            # The claim and the submit enqueue nothing.
            "CELERY_BROKER_URL": "",
            "SECURE_SSL_REDIRECT": "0",
            "MEDIA_ROOT": str(ROOT / "var" / "bench-media"),
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
        }
        env |= server_settings()
        self.log = log
        self._log_file = log.open("wb")
        self.popen = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "-c",
                "deploy/gunicorn.conf.py",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise SystemExit(f"gunicorn exited at start:\n{self._tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz", headers={"Host": "127.0.0.1"})
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit(
            f"gunicorn did not answer /healthz in {START_TIMEOUT:.0f} s:\n{self._tail()}"
        )

    def _tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])

    def pids(self) -> list[int]:
        """The master and its workers."""
        children = [
            pid
            for pid, stat in _processes("stat")
            if int(stat.rsplit(b")", 1)[1].split()[1]) == self.popen.pid
        ]
        return [self.popen.pid, *children]

    def stop(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        self._log_file.close()


# --- CPU over the window -------------------------------------------------------------------


def _processes(name: str) -> Iterator[tuple[int, bytes]]:
    """Each process's id and its /proc file `name` (one that ended meanwhile is skipped)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                yield int(entry.name), (entry / name).read_bytes()
            except OSError:
                continue


def _backends(database: str) -> list[int]:
    """PostgreSQL backends connected to the database (their titles name it)."""
    marker = f" {database} ".encode()
    return [
        pid
        for pid, cmdline in _processes("cmdline")
        if cmdline.startswith(b"postgres: ") and marker in cmdline
    ]


def _cpu(pids: list[int]) -> dict[int, float]:
    from bench.proc import process_cpu_seconds

    seen = {}
    for pid in pids:
        try:
            seen[pid] = process_cpu_seconds(pid)
        except OSError:
            continue
    return seen


def _machine_busy_seconds() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(f) for f in fields]
    idle = ticks[3] + ticks[4]  # idle and iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    # Processes present at both ends; one that came or went in between is not counted.
    return sum(after[pid] - before[pid] for pid in after if pid in before)


def _came_or_went(before: dict[int, float], after: dict[int, float]) -> int:
    return len(before.keys() ^ after.keys())


# --- the clients ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """When a run's clients start, measure and stop (wall clock), and for a paced run each
    client's interval between claims (every client's schedule starts at its own offset within
    one interval, so together they offer an even stream)."""

    start: float
    measure_from: float
    stop_at: float
    interval: float | None = None


class _Dry(Exception):
    """The queue had nothing left for this client (a run should never get here)."""


def _client(
    port: int, campaign_id: int, key: str, window: Window, offset: float, out: list[Any]
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
        "Host": "127.0.0.1",
    }
    record: dict[str, Any] = {
        "next": [],
        "submit": [],
        "statuses": Counter(),
        "late": 0,
        "slow_by_second": Counter(),
    }
    try:
        _loop(conn, campaign_id, headers, window, offset, record)
    except _Dry:
        record["dry"] = True
    except Exception as exc:  # in a thread: reported, and the run refuses to give figures
        out.append({"error": f"{type(exc).__name__}: {exc}"})
        return
    finally:
        conn.close()
    out.append(record)


def _loop(
    conn: http.client.HTTPConnection,
    campaign_id: int,
    headers: dict[str, str],
    window: Window,
    offset: float,
    record: dict[str, Any],
) -> None:
    scheduled = window.start + offset
    while True:
        now = time.time()
        if window.interval is None:
            due = now
        else:
            # A paced claim's latency runs from when it was due, however late it starts.
            due, scheduled = scheduled, scheduled + window.interval
            if now >= window.stop_at + LATE_LIMIT:
                record["late"] += max(0, math.ceil((window.stop_at - due) / window.interval))
                break
            time.sleep(max(0.0, due - now))
        if due >= window.stop_at:
            break
        counted = due >= window.measure_from
        t0 = time.perf_counter() - max(0.0, time.time() - due)
        conn.request("POST", f"/api/v1/campaigns/{campaign_id}/next/", body=b"", headers=headers)
        answer = conn.getresponse()
        body = answer.read()
        t1 = time.perf_counter()
        if answer.status != 200:
            if counted:
                record["statuses"][f"next {answer.status}"] += 1
            if answer.status == 204:
                raise _Dry
            continue
        payload = json.loads(body)
        chosen = payload["item"]["responses"][0]["id"]
        conn.request(
            "POST",
            f"/api/v1/assignments/{payload['assignment']['id']}/submit/",
            body=json.dumps({"preference": {"chosen": chosen, "strength": 1}}).encode(),
            headers=headers,
        )
        answer = conn.getresponse()
        answer.read()
        t2 = time.perf_counter()
        if counted:
            if answer.status != 201:
                record["statuses"][f"submit {answer.status}"] += 1
            record["next"].append(int((t1 - t0) * 1e6))
            record["submit"].append(int((t2 - t1) * 1e6))
            if t1 - t0 > SLOW_SECONDS:
                record["slow_by_second"][int(due - window.measure_from)] += 1


def _client_process(
    port: int,
    campaign_id: int,
    keys: list[tuple[str, float]],
    window: Window,
    results: Any,
) -> None:
    out: list[Any] = []
    cpu: list[float] = []

    def own_cpu_at(moment: float) -> None:
        time.sleep(max(0.0, moment - time.time()))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu.append(usage.ru_utime + usage.ru_stime)

    threads = [
        threading.Thread(target=_client, args=(port, campaign_id, key, window, offset, out))
        for key, offset in keys
    ]
    threads += [
        threading.Thread(target=own_cpu_at, args=(moment,))
        for moment in (window.measure_from, window.stop_at)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put({"clients": out, "cpu_seconds": max(cpu) - min(cpu)})


def run_clients(
    web: Web,
    database: str,
    campaign_id: int,
    keys: list[str],
    clients: int,
    rate: float | None = None,
    vacuums: list[tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """`clients` clients in a closed loop, or offering `rate` claims per second together;
    `vacuums` is the vacuum thread's record (when each ended, how long it took)."""
    from bench.bench_claims import _server_counters, percentiles

    start = time.time() + 1.0
    interval = clients / rate if rate else None
    window = Window(start, start + WARMUP, start + WARMUP + SECONDS, interval)
    offsets = [(interval or 0.0) * k / clients for k in range(clients)]
    scheduled = list(zip(keys[:clients], offsets, strict=True))
    groups = [scheduled[i : i + THREADS] for i in range(0, clients, THREADS)]
    context = mp.get_context("spawn")
    results = context.Queue()
    procs = [
        context.Process(
            target=_client_process, args=(web.port, campaign_id, group, window, results)
        )
        for group in groups
    ]
    for proc in procs:
        proc.start()
    time.sleep(max(0.0, window.measure_from - time.time()))
    web_before, db_before = _cpu(web.pids()), _cpu(_backends(database))
    busy_before, server_before = _machine_busy_seconds(), _server_counters(web.database_url)
    time.sleep(max(0.0, window.stop_at - time.time()))
    web_after, db_after = _cpu(web.pids()), _cpu(_backends(database))
    busy_after, server_after = _machine_busy_seconds(), _server_counters(web.database_url)
    gathered = [results.get(timeout=SECONDS + WARMUP + LATE_LIMIT + 120) for _ in procs]
    for proc in procs:
        proc.join()
    per_client = [c for g in gathered for c in g["clients"]]
    errors = [c["error"] for c in per_client if "error" in c]
    if errors or len(per_client) != clients:
        raise SystemExit(f"{clients - len(per_client) + len(errors)} clients failed: {errors[:5]}")
    loops = sum(len(c["next"]) for c in per_client)
    statuses: Counter[str] = Counter()
    slow: Counter[int] = Counter()
    for c in per_client:
        statuses.update(c["statuses"])
        slow.update(c["slow_by_second"])

    def per_loop(seconds: float) -> float:
        return round(seconds * 1000 / loops, 3) if loops else 0.0

    return {
        "clients": clients,
        "offered_loops_per_s": rate,
        "client_processes": len(procs),
        "loops": loops,
        "loops_per_s": round(loops / SECONDS, 1),
        "late_loops_not_run": sum(c["late"] for c in per_client),
        "next": percentiles([x for c in per_client for x in c["next"]]),
        "submit": percentiles([x for c in per_client for x in c["submit"]]),
        "not_200_or_201": dict(statuses),
        "next_over_15_ms_by_second": dict(sorted(slow.items())),
        # Checkpoints, WAL and full-page images the server wrote over the window.
        "server": {k: round(server_after[k] - server_before[k], 1) for k in server_after},
        # When the server's vacuums ended, in seconds from the window's start, to set against
        # the slow claims by second.
        "vacuums_ended_at_s": [
            round(ended - window.measure_from, 1)
            for ended, _ in vacuums or []
            if window.measure_from - 2 <= ended <= window.stop_at
        ],
        "clients_that_ran_dry": sum(bool(c.get("dry")) for c in per_client),
        "cpu_ms_per_loop": {
            "web": per_loop(_spent(web_before, web_after)),
            "postgres": per_loop(_spent(db_before, db_after)),
            "clients": per_loop(sum(g["cpu_seconds"] for g in gathered)),
            "machine_busy": per_loop(busy_after - busy_before),
        },
        # Web workers (recycled after GUNICORN_MAX_REQUESTS) and backends (closed after
        # DB_CONN_MAX_AGE) that started or ended within the window: their CPU is missing from
        # the figures above, so with any here those are short of the loops' cost (the machine's
        # busy time is whole).
        "processes_came_or_went": {
            "web": _came_or_went(web_before, web_after),
            "postgres": _came_or_went(db_before, db_after),
        },
    }


def _api_keys(experts: list[int]) -> list[str]:
    from feedback.models import ApiKey, User
    from feedback.services import api_key_create

    ApiKey.objects.filter(user_id__in=experts).delete()
    return [api_key_create(user=User.objects.get(pk=pk), name="bench")[1] for pk in experts]


def main() -> dict[str, Any]:
    from bench.bench_claims import (
        _vacuum_now_and_then,
        check_invariants,
        cpu_probe_ms,
        load_campaign,
        prepare_database,
    )
    from bench.results import write

    url = prepare_database()
    database = url.rsplit("/", 1)[1]
    if max([*CLIENTS, PACED_CLIENTS]) > 64:
        raise SystemExit("The bench loads 64 experts: at most 64 clients.")
    result: dict[str, Any] = {
        "seconds_per_run": SECONDS,
        "warmup_seconds": WARMUP,
        "threads_per_client_process": THREADS,
        "web": "gunicorn -c deploy/gunicorn.conf.py"
        + (f" with {settings}" if (settings := server_settings()) else " (its defaults)"),
        "sizes": {},
    }
    rates: list[float] = []  # the paced rates, set from the first size's closed loops
    log = ROOT / "var" / "bench-web.log"
    log.parent.mkdir(exist_ok=True)
    for size in SIZES:
        began = time.perf_counter()
        campaign_id, experts = load_campaign(size)
        load_seconds = round(time.perf_counter() - began, 1)
        keys = _api_keys(experts)
        probes = [cpu_probe_ms()]
        web = Web(url, log)
        stop = threading.Event()
        vacuums: list[tuple[float, float]] = []
        vacuum = threading.Thread(target=_vacuum_now_and_then, args=(url, stop, vacuums))
        vacuum.start()
        runs = {}
        try:
            for clients in CLIENTS:
                runs[str(clients)] = run_clients(
                    web, database, campaign_id, keys, clients, vacuums=vacuums
                )
                print(f"  {size} items, {clients} clients: {runs[str(clients)]['loops_per_s']}/s")
            if PACED_CLIENTS and not rates:
                best = max(r["loops_per_s"] for r in runs.values())
                rates.extend(round(share * best) for share in PACED_SHARES)
            for rate in rates:
                run = run_clients(
                    web, database, campaign_id, keys, PACED_CLIENTS, rate, vacuums=vacuums
                )
                runs[f"paced_{rate}"] = run
                print(f"  {size} items, paced at {rate}/s: next p99 {run['next']['p99_ms']} ms")
        finally:
            stop.set()
            vacuum.join()
            web.stop()
        probes.append(cpu_probe_ms())
        result["sizes"][str(size)] = {
            "load_seconds": load_seconds,
            "runs": runs,
            "vacuums": len(vacuums),
            "invariants": check_invariants(campaign_id),
            "cpu_probe_ms": {"min": min(probes), "max": max(probes)},
        }
    first, last = (result["sizes"][str(s)]["runs"] for s in (SIZES[0], SIZES[-1]))
    if len(SIZES) > 1:
        result["paced_next_p99_ratio_large_to_small"] = {
            f"{rate}/s": round(
                last[f"paced_{rate}"]["next"]["p99_ms"] / first[f"paced_{rate}"]["next"]["p99_ms"],
                2,
            )
            for rate in rates
        }
    write("claims_http", result)
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
