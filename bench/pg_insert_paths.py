"""PostgreSQL: executemany with ON CONFLICT against COPY into a staging table.

Both insert the same canonical rows idempotently into the service's own schema (made by
its migrations), one transaction per batch, through the same psycopg 3 driver. Prints
records per second of each and their ratio; the service keeps the faster one.

    .venv/bin/python bench/pg_insert_paths.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from gpumetrics.models import gpus  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from gpumetrics import store  # noqa: E402
from gpumetrics.db import Database  # noqa: E402

COLUMNS = store._ROW_COLUMNS


def rows(count: int, offset: int) -> list[tuple]:
    out = []
    for n in range(offset, offset + count):
        row = [None] * len(COLUMNS)
        row[0], row[1], row[2] = 1, "power", n * 1_000_000
        row[COLUMNS.index("watts")] = float(n % 300)
        out.append(tuple(row))
    return out


def executemany(conn: psycopg.Connection, batch: list[tuple]) -> int:
    columns = ", ".join(COLUMNS)
    marks = ", ".join(["%s"] * len(COLUMNS))
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO records ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING", batch)
        return cur.rowcount


def copy_staging(conn: psycopg.Connection, batch: list[tuple]) -> int:
    columns = ", ".join(COLUMNS)
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS staging ON COMMIT DELETE ROWS AS "
            f"SELECT {columns} FROM records WITH NO DATA"
        )
        with cur.copy(f"COPY staging ({columns}) FROM STDIN") as copy:
            for row in batch:
                copy.write_row(row)
        cur.execute(f"INSERT INTO records ({columns}) SELECT {columns} FROM staging ON CONFLICT DO NOTHING")
        return cur.rowcount


def run(url: str, method, total: int, batch_size: int, offset: int) -> float:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        data = rows(total, offset)
        started = time.perf_counter()
        stored = 0
        for start in range(0, total, batch_size):
            stored += method(conn, data[start : start + batch_size])
            conn.commit()
        elapsed = time.perf_counter() - started
        assert stored == total, (stored, total)
        again = method(conn, data[:batch_size])  # idempotent: all duplicates
        conn.commit()
        assert again == 0
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(make_url(args.url).set(drivername="postgresql").render_as_string(hide_password=False))
    admin.execute(f"CREATE SCHEMA {schema}")
    admin.commit()
    url = make_url(args.url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)
    try:
        db = Database(url)
        db.upgrade()
        with db.writing() as session:
            session.execute(gpus.insert().values(id=1, host="", gpu_index=0, first_seen=0, last_seen=0))
        db.dispose()
        results: dict[str, list[float]] = {}
        runs = 0
        for _ in range(2):  # alternate, so that drift on a noisy machine hits both
            for name, method in (("executemany", executemany), ("copy+staging", copy_staging)):
                rate = run(url, method, args.records, args.batch, offset=runs * args.records)
                runs += 1
                results.setdefault(name, []).append(rate)
        for name, rates in results.items():
            print(f"{name:>14}: {max(rates):>9,.0f} records/s (best of {len(rates)}; batches of {args.batch})")
        ratio = max(results["copy+staging"]) / max(results["executemany"])
        print(f"copy+staging / executemany = {ratio:.2f}")
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.commit()
        admin.close()


if __name__ == "__main__":
    main()
