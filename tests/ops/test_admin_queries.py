"""The admin service's background reads of the newest queue rows: through the BRIN indexes on the
connection the live tail and the overview use, never a scan of whole datasets (measured 10-20 ms per read
against 0.5 ms on a 40K-row dataset: docs/benchmarks.md, the admin page)."""

from __future__ import annotations

import threading

from jobsdb import inspect
from jobsdb.queries import query
from jobsdb.queue import DeliveryRow, GatewayRow, enqueue_delivery, enqueue_gw
from ops.admin_db import STATEMENTS, long_lived


def plan(cur, statement: str, args: dict) -> str:
    cur.execute("EXPLAIN " + statement, args)
    return "\n".join(r[0] for r in cur.fetchall())


def test_live_tail_reads_use_the_brin_indexes(db, dsn):
    with db.cursor() as cur:
        enqueue_gw(cur, [GatewayRow(i % 16, "src", f"u{i % 50}", f'{{"type": "track", "messageId": "m{i}"}}',
                                    "2026-01-01T00:00:00Z") for i in range(3000)])
        enqueue_delivery(cur, "rt_jobs", [DeliveryRow(i % 16, "d1", "src", f"u{i % 50}", f"m{i}", {"i": i})
                                          for i in range(3000)])
        cur.execute("UPDATE rt_jobs SET state = 1 WHERE job_id < 2500")
    db.commit()
    stop = threading.Event()
    reader = long_lived(dsn, "sluice-admin-test", stop)
    try:
        before = STATEMENTS.snapshot()["statements"]
        with reader.get().cursor() as cur:
            last = inspect.sequences(cur)
            cache: dict = {}
            assert inspect.summarize_newest(cur, last, 100_000, cache) > 0, "the new pages were summarised"
            assert cache["indexes"] and inspect.summarize_newest(cur, last, 100_000, cache) == 0
            args = {"after": 2900, "limit": 400, "max_bytes": 16384, "seen": list(range(2901, 2950))}
            gw = plan(cur, query("admin_tail_gw"), args)
            rt = plan(cur, query("admin_tail_delivery", table="rt_jobs"), args)
            ids = [*range(10, 60), *range(2900, 2950)]
            lows, highs = inspect.id_ranges(ids)
            status = plan(cur, query("admin_tail_status", table="rt_jobs"), {"ids": ids, "lows": lows, "highs": highs})
            found = inspect.delivery_status(cur, "rt_jobs", ids)
        assert STATEMENTS.snapshot()["statements"] > before, "the admin's statements are counted"
    finally:
        stop.set()
        reader.close()
    for p in (gw, rt, status):
        assert "Seq Scan" not in p and "Gather" not in p, p
        assert "brin" in p.lower() or "_idx" in p, p
    assert "job_id = ANY" not in status.split("Index Cond")[-1].split("\n")[0], "ids filter, never probe the BRIN"
    assert sorted(r[0] for r in found) == ids
    assert {r[0]: r[1] for r in found}[10] == 1 and {r[0]: r[1] for r in found}[2949] == 0


def test_id_ranges_split_where_ids_are_far_apart():
    assert inspect.id_ranges([]) == ([], [])
    assert inspect.id_ranges([7, 3, 5]) == ([3], [7])
    assert inspect.id_ranges([1, 2, 900, 901, 5000], gap=500) == ([1, 900, 5000], [2, 901, 5000])
