"""`sluice replay`: failed jobs back into the pipeline, by destination, source, stage, status, reason text,
time range or ids; in failure order, in slices of one transaction each, with a progress bar.

The selector parsing here is shared with the admin HTTP API (ops/admin.py), so both accept the same words.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import re
import socket
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from jobsdb.db import connect
from jobsdb.replay import ENTRY, STAGES, Selection, count, list_failed, replay

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
# Selector words: singular and plural spellings of the same thing.
_LIST_KEYS = {"destination": "destinations", "source": "sources", "stage": "stages", "status": "statuses",
              "id": "ids"}


class SelectionError(ValueError):
    pass


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """ISO 8601 (naive means UTC), or an age like 30m, 2h, 7d meaning that long ago."""
    m = _RELATIVE.match(text)
    if m:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SelectionError(f"expected an ISO 8601 time or an age like 30m, 2h, 7d, found {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _flat(values: Iterable[Any]) -> list[str]:
    """Repeated values and comma-separated lists alike, as stripped non-empty strings."""
    out: list[str] = []
    for v in values:
        if v is None:
            continue
        for piece in (v if isinstance(v, list | tuple) else str(v).split(",")):
            piece = str(piece).strip()
            if piece:
                out.append(piece)
    return out


def _ints(name: str, values: list[str]) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise SelectionError(f"{name}: expected whole numbers, found {', '.join(values)}") from None


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise SelectionError(f"{name}: expected true or false, found {value!r}")


def selection_from(get: Callable[[str], list[Any]]) -> Selection:
    """Build a Selection from named values: `get(word)` returns every value given for that word
    (query parameters, a JSON body, or CLI flags). Words: destination(s), source(s), stage(s), status(es),
    id(s), reason, since, until, include_replayed."""
    lists: dict[str, list[str]] = {}
    for singular, plural in _LIST_KEYS.items():
        lists[plural] = _flat([*get(singular), *get(plural)])
    bad = [s for s in lists["stages"] if s not in STAGES]
    if bad:
        raise SelectionError(f"stage: {bad[0]!r} is not one of {', '.join(STAGES)}")
    one: dict[str, Any] = {}
    for word in ("reason", "since", "until", "include_replayed"):
        values = [v for v in get(word) if v not in (None, "")]
        if len(values) > 1:
            raise SelectionError(f"{word}: given more than once")
        one[word] = values[0] if values else None
    since = parse_time(str(one["since"])) if one["since"] is not None else None
    until = parse_time(str(one["until"])) if one["until"] is not None else None
    if since and until and since >= until:
        raise SelectionError("since must be before until")
    return Selection(
        ids=_ints("id", lists["ids"]), destinations=tuple(lists["destinations"]), sources=tuple(lists["sources"]),
        stages=tuple(lists["stages"]), statuses=_ints("status", lists["statuses"]),
        reason=str(one["reason"]) if one["reason"] is not None else None, since=since, until=until,
        include_replayed=_bool("include_replayed", one["include_replayed"]) if one["include_replayed"] is not None
        else False,
    )


def targets_text(targets: Counter) -> list[str]:
    """'12 → rt_jobs (re-enters the router) for destination d1' lines, biggest first."""
    return [f"{n:>7} → {table} (re-enters the {ENTRY.get(table, table)}) for destination {dest or '-'}"
            for (table, dest), n in targets.most_common()]


def targets_json(targets: Counter) -> list[dict[str, Any]]:
    return [{"queue": table, "enters": ENTRY.get(table, table), "destination_id": dest, "count": n}
            for (table, dest), n in targets.most_common()]


def jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


# ---- the command ----------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    sel = p.add_argument_group("selectors (every one given must match; a selection is always explicit, "
                               "so these read no environment variable)")
    sel.add_argument("--destination", action="append", default=[], metavar="ID",
                     help="destination id (repeatable, or comma-separated)")
    sel.add_argument("--source", action="append", default=[], metavar="ID", help="source id (repeatable)")
    sel.add_argument("--stage", action="append", default=[], choices=STAGES,
                     help="where it failed (repeatable): transformation failures re-enter the processor, "
                          "router failures the router queue")
    sel.add_argument("--status", action="append", default=[], metavar="CODE",
                     help="the destination's HTTP status, e.g. 400 (repeatable)")
    sel.add_argument("--reason", metavar="TEXT", help="case-insensitive substring of the failure reason")
    sel.add_argument("--since", metavar="TIME", help="failed at or after: ISO 8601, or an age like 30m, 2h, 7d")
    sel.add_argument("--until", metavar="TIME", help="failed before: ISO 8601, or an age like 30m, 2h, 7d")
    sel.add_argument("--id", action="append", default=[], metavar="N", help="a failed_jobs id (repeatable)")
    sel.add_argument("--ids", action="append", default=[], metavar="N,N,...", help="failed_jobs ids, comma-separated")
    sel.add_argument("--all", action="store_true", help="no selector: every failed job not replayed yet")
    sel.add_argument("--include-replayed", action="store_true",
                     help="also select rows replayed before (by default a failed job is replayed once)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="replay at most N (the oldest first)")
    p.add_argument("--dry-run", action="store_true", help="only show how many and which; change nothing")
    p.add_argument("--show", type=int, default=None, metavar="N",
                   help="rows listed by --dry-run (default 20; env SLUICE_REPLAY_SHOW)")
    p.add_argument("--slice-size", type=int, default=None, metavar="N",
                   help="failed jobs per transaction (default 1000; env SLUICE_REPLAY_SLICE_SIZE)")
    p.add_argument("--yes", "-y", action="store_true",
                   help="do not ask for confirmation (needed when there is no terminal to ask on)")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")


def _env_int(args_value: int | None, env: str, default: int) -> int:
    if args_value is not None:
        return args_value
    raw = os.environ.get(env)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"sluice replay: {env}: expected a whole number, found {raw!r}") from None


def cli_selection(args: argparse.Namespace) -> Selection:
    words = {"destination": args.destination, "source": args.source, "stage": args.stage, "status": args.status,
             "id": [*args.id, *args.ids], "reason": [args.reason], "since": [args.since], "until": [args.until],
             "include_replayed": [args.include_replayed]}
    try:
        sel = selection_from(lambda w: words.get(w, []))
    except SelectionError as exc:
        raise SystemExit(f"sluice replay: {exc}") from None
    if not sel.narrowed and not args.all:
        raise SystemExit("sluice replay: say which failed jobs: --destination, --source, --stage, --status, "
                         "--reason, --since/--until, --id/--ids, or --all for every one")
    return sel


def who() -> str:
    with contextlib.suppress(Exception):
        return f"cli:{getpass.getuser()}@{socket.gethostname()}"
    return "cli"


def cmd_replay(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ops.cli import _need_database, _settings

    sel = cli_selection(args)
    if args.limit is not None and args.limit < 1:
        raise SystemExit("sluice replay: --limit must be at least 1")
    show = _env_int(args.show, "SLUICE_REPLAY_SHOW", 20)
    slice_size = max(1, _env_int(args.slice_size, "SLUICE_REPLAY_SLICE_SIZE", 1000))
    settings = _need_database(_settings(args))
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False)
    with contextlib.closing(connect(settings.database_url, "sluice-replay")) as conn:
        with conn.cursor() as cur:
            matched, _lo, _hi = count(cur, sel)
            first = list_failed(cur, sel, limit=max(0, min(show, matched))) if args.dry_run else []
        conn.commit()
        n = matched if args.limit is None else min(matched, args.limit)
        if args.dry_run:
            _print_dry_run(out, args, matched, n, first)
            return 0
        if n == 0:
            _emit(out, args, {"replayed": 0, "selection": sel.describe(), "targets": []},
                  "no failed jobs match: nothing to replay")
            return 0
        if not args.yes:
            if not sys.stdin.isatty():
                raise SystemExit(f"sluice replay: {n} failed jobs match; no terminal to confirm on, "
                                 "pass --yes to replay them")
            answer = input(f"Replay {n} failed jobs? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                err.print("nothing replayed")
                return 1
        result = _replay_with_progress(conn, sel, n, args.limit, slice_size, err)
    text = f"replayed {result.selected} failed jobs (marked replayed in failed_jobs, not deleted):"
    _emit(out, args, {"replayed": result.selected, "selection": sel.describe(),
                      "targets": targets_json(result.targets)},
          "\n".join([text, *targets_text(result.targets)]))
    return 0


def _replay_with_progress(conn, sel: Selection, total: int, limit: int | None, slice_size: int, err):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=False) as progress:
        task = progress.add_task("replay", total=total)
        return replay(conn, sel, who(), limit=limit, slice_size=slice_size,
                      on_slice=lambda part: progress.advance(task, part.selected))


def _emit(out, args: argparse.Namespace, data: dict, text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        out.print(text)


def _print_dry_run(out, args: argparse.Namespace, matched: int, n: int, first: list[dict]) -> None:
    if args.json:
        print(json.dumps({"dry_run": True, "count": n, "matched": matched,
                          "jobs": [jsonable(r) for r in first]}, indent=2, default=str))
        return
    from rich.table import Table

    limited = f" (--limit: the oldest {n} would be replayed)" if n < matched else ""
    out.print(f"{matched} failed jobs match{limited}; dry run, nothing changed")
    if not first:
        return
    table = Table(box=None, pad_edge=False)
    for col in ("id", "stage", "destination", "status", "reason", "failed_at", "replays"):
        table.add_column(col, overflow="fold")
    for r in first:
        table.add_row(str(r["id"]), r["stage"], r["destination_id"] or "-",
                      "-" if r["status_code"] is None else str(r["status_code"]), (r["reason"] or "")[:100],
                      r["failed_at"].isoformat(timespec="seconds"), str(r["replay_count"]))
    out.print(table)
    if len(first) < matched:
        out.print(f"... and {matched - len(first)} more (--show N lists more)")
