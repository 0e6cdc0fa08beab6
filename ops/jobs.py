"""`sluice jobs`: queue depths per queue and state, the oldest pending job's age, failures by destination."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from jobsdb.db import connect
from jobsdb.queue import queue_counts

STATE_NAMES = {0: "pending", 1: "done", 2: "aborted"}
QUEUES = {"gw": "gw_jobs", "rt": "rt_jobs", "batch_rt": "batch_rt_jobs"}


def collect(dsn: str) -> dict:
    now = datetime.now(UTC)
    report: dict = {"queues": {}, "failed": [], "rejected": 0}
    with contextlib.closing(connect(dsn, "sluice-jobs")) as conn, conn.cursor() as cur:
        for name, table in QUEUES.items():
            states, oldest_pending = {}, None
            for state, n, oldest in queue_counts(cur, table):
                states[STATE_NAMES.get(state, str(state))] = n
                if state == 0:
                    oldest_pending = oldest
            report["queues"][name] = {
                "states": states,
                "oldest_pending_age_s": round((now - oldest_pending).total_seconds(), 1) if oldest_pending else None,
            }
        cur.execute(
            "SELECT coalesce(destination_id, ''), stage, left(reason, 120), count(*), max(failed_at) "
            "FROM failed_jobs WHERE replayed_at IS NULL GROUP BY 1, 2, 3 ORDER BY 4 DESC LIMIT 50"
        )
        report["failed"] = [
            {"destination_id": d, "stage": s, "reason": r, "count": n, "last": last} for d, s, r, n, last in cur.fetchall()
        ]
        cur.execute("SELECT count(*) FROM gw_rejected")
        report["rejected"] = cur.fetchone()[0]
    return report


def render(report: dict) -> str:
    lines = [f"{'queue':<10}{'pending':>10}{'done':>12}{'aborted':>10}  oldest pending"]
    for name, q in report["queues"].items():
        s = q["states"]
        age = "-" if q["oldest_pending_age_s"] is None else f"{q['oldest_pending_age_s']}s"
        lines.append(f"{name:<10}{s.get('pending', 0):>10}{s.get('done', 0):>12}{s.get('aborted', 0):>10}  {age}")
    lines.append(f"\nrejected by the gateway: {report['rejected']}")
    if report["failed"]:
        lines.append("\nfailed jobs (not replayed) by destination and reason:")
        for f in report["failed"]:
            lines.append(f"  {f['count']:>7}  {f['destination_id'] or '-':<24} {f['stage']:<15} {f['reason']}")
    else:
        lines.append("failed jobs: none")
    return "\n".join(lines)
