"""`sluice jobs`: queue depths per queue and state, the oldest pending job's age, destinations that are
retrying (with the last error and the next attempt), and dead letters by destination, stage and reason
(how many wait for a replay, how many were replayed)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from jobsdb import heartbeats, inspect
from jobsdb.db import connect
from jobsdb.queue import queue_counts, warehouse_report
from jobsdb.replay import rejected_count, summary

STATE_NAMES = {0: "pending", 1: "done", 2: "aborted"}
QUEUES = {"gw": "gw_jobs", "rt": "rt_jobs", "batch_rt": "batch_rt_jobs"}


def collect(dsn: str, stale_after: float = 15.0) -> dict:
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
        report["failed"] = [
            {"destination_id": r["destination_id"], "destination_type": r["destination_type"], "stage": r["stage"],
             "reason": r["reason"], "count": r["open"], "replayed": r["replayed"], "last": r["last_failed_at"]}
            for r in summary(cur)
        ]
        report["failed_open"] = sum(f["count"] for f in report["failed"])
        report["rejected"] = rejected_count(cur)
        report["processes"] = heartbeats.roles_status(cur, stale_after)
        report["warehouses"] = warehouse_report(cur)
        report["retrying"] = [
            {"destination_id": r["destination_id"], "queue": r["queue"], "jobs": r["n"],
             "next_attempt_at": r["next_at"], "max_attempts": r["max_attempts"], "last_status": r["last_status"],
             "last_error": r["last_error"], "last_attempt_at": r["last_attempt_at"]}
            for r in inspect.retrying(cur)
        ]
        report["now"] = inspect.db_now(cur)
    return iso_times(report)


def iso_times(value):
    """Every datetime in a JSON-like value as ISO 8601 text (the `sluice jobs` report, the admin's JSON)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: iso_times(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [iso_times(v) for v in value]
    return value


def render(report: dict) -> str:
    lines = [f"{'queue':<10}{'pending':>10}{'done':>12}{'aborted':>10}  oldest pending"]
    for name, q in report["queues"].items():
        s = q["states"]
        age = "-" if q["oldest_pending_age_s"] is None else f"{q['oldest_pending_age_s']}s"
        lines.append(f"{name:<10}{s.get('pending', 0):>10}{s.get('done', 0):>12}{s.get('aborted', 0):>10}  {age}")
    procs = report.get("processes") or {}
    if procs.get("roles"):
        live = ", ".join(f"{role} {e['live']}" for role, e in sorted(procs["roles"].items()))
        lines.append(f"\nprocesses alive: {live}")
        if procs.get("down"):
            lines.append(f"roles down: {', '.join(procs['down'])}")
        for x in procs.get("crash_looping", []):
            lines.append(f"crash-looping: {x['role']} on {x['host']} ({x.get('restarts_last_minute', '?')} restarts "
                         f"in the last minute)")
    if report.get("warehouses"):
        lines.append("\nwarehouses:")
        lines.append(f"  {'destination':<24} {'pending':>8} {'events':>9} {'rows':>9} {'discards':>8}  last sync")
        for w in report["warehouses"]:
            last = w["last_success_at"][:19] if w["last_success_at"] else "never"
            lines.append(f"  {w['destination_id'] + ' (' + w['destination_type'] + ')':<24} {w['pending']:>8} "
                         f"{w['events_loaded']:>9} {w['rows_loaded']:>9} {w['discards']:>8}  {last}")
            if w.get("failing"):
                lines.append(f"    last error: {w['last_error']}")
    if report.get("retrying"):
        lines.append("\nretrying (the router tries again; the same users' later events wait behind them):")
        lines.append(f"  {'jobs':>7}  {'destination':<24} {'next attempt':<22} last error")
        now = _parse(report.get("now"))
        for r in report["retrying"]:
            nxt = _parse(r["next_attempt_at"])
            when = nxt.strftime("%H:%M:%S") if nxt else "-"
            if nxt and now:
                left = (nxt - now).total_seconds()
                when += f" (in {left:.0f}s)" if left >= 0 else " (due)"
            status = f"HTTP {r['last_status']}" if r["last_status"] else "no answer"
            error = " ".join((r["last_error"] or "").split())[:100]
            lines.append(f"  {r['jobs']:>7}  {r['destination_id']:<24} {when:<22} {status}: {error}")
    lines.append(f"\nrejected by the gateway: {report['rejected']}")
    if report["failed"]:
        lines.append("\nfailed jobs by destination and reason (open = not replayed yet):")
        lines.append(f"  {'open':>7} {'replayed':>8}  {'destination':<24} {'stage':<15} reason")
        for f in report["failed"]:
            dest = f["destination_id"] or "-"
            if f.get("destination_type"):
                dest = f"{dest} ({f['destination_type']})"
            lines.append(f"  {f['count']:>7} {f['replayed']:>8}  {dest:<24} {f['stage']:<15} {f['reason']}")
        if report.get("failed_open"):
            lines.append("\nreplay with: sluice replay --destination ID [--reason TEXT] --dry-run")
    else:
        lines.append("failed jobs: none")
    return "\n".join(lines)


def _parse(value) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None
