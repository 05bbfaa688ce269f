"""`python -m feedback.dbcheck URL`: one clear line and exit 1 when PostgreSQL is unreachable."""

from __future__ import annotations

import sys

import dj_database_url
import psycopg


def main(url: str) -> int:
    config = dj_database_url.parse(url)
    if not config["ENGINE"].endswith("postgresql"):
        print(f"DATABASE_URL must point at PostgreSQL for the tests, not {config['ENGINE']}.")
        return 1
    try:
        psycopg.connect(
            host=config.get("HOST") or "127.0.0.1",
            port=int(config.get("PORT") or 5432),
            user=config.get("USER") or "postgres",
            password=config.get("PASSWORD") or None,
            dbname="postgres",
            connect_timeout=3,
        ).close()
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"PostgreSQL is not reachable at {config.get('HOST')}:{config.get('PORT') or 5432} ({first}). "
            "Start it (Debian: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) "
            "or set DATABASE_URL=postgres://USER:PASSWORD@HOST:PORT/DB."
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(
        main(sys.argv[1] if len(sys.argv) > 1 else "postgres://postgres@127.0.0.1:5432/feedback")
    )
