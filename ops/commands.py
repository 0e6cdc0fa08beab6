"""Operator commands beyond the process roles: `sluice transform` previews what a user transformation
or a destination transformer makes of events, locally, without a database."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable


def register(sub, add: Callable, common_flags: dict) -> None:
    p = add("transform", cmd_transform,
            "preview what Sluice makes of the events of a JSONL file, one JSON line per input event: a workspace "
            "destination end to end (--destination ID: its rules, transformation and payload, as the processor "
            "does), a user transformation (--transformation) or a destination payload (--destination-type). "
            "Exits 1 when any event errored", ())
    p.add_argument("--events", required=True, metavar="FILE.jsonl",
                   help="input events, one JSON object per line ('-' reads standard input)")
    p.add_argument("--destination", metavar="ID",
                   help="a destination of the workspace config (--workspace): its config and transformation are used")
    p.add_argument("--workspace", metavar="WORKSPACE.json",
                   help="the workspace config for --destination (env SLUICE_CONFIG, default ./workspace-config.json)")
    p.add_argument("--transformation", metavar="FILE.js",
                   help="a user transformation exporting transformEvent or transformBatch")
    p.add_argument("--destination-type", metavar="TYPE", help="destination type, e.g. GA4, GA, AM, WEBHOOK")
    p.add_argument("--config", metavar="CONFIG.json", help="the destination's config object (with --destination-type)")
    p.add_argument("--now", metavar="ISO8601", help="the time the destination transformer sees (default: now)")
    p.add_argument("--time-limit-ms", type=int, default=None,
                   help="time limit of the transformation call (env SLUICE_TRANSFORM_TIME_LIMIT_MS)")
    p.add_argument("--memory-limit-mb", type=int, default=None,
                   help="memory limit of the transformation (env SLUICE_TRANSFORM_MEMORY_LIMIT_MB)")
    register_replay(sub, add, common_flags)


def _read_events(path: str) -> list[tuple[int, dict | None, str | None]]:
    """(line index among non-blank lines, event or None, parse error or None)."""
    fh = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        out = []
        for line in fh:
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                out.append((len(out), None, f"invalid JSON: {exc.msg} at column {exc.colno}"))
                continue
            if not isinstance(value, dict):
                out.append((len(out), None, "expected a JSON object"))
                continue
            out.append((len(out), value, None))
        return out
    finally:
        if fh is not sys.stdin:
            fh.close()


def _emit(line: dict) -> None:
    print(json.dumps(line, ensure_ascii=False), flush=False)


def cmd_transform(args: argparse.Namespace) -> int:
    modes = [m for m in (args.destination, args.transformation, args.destination_type) if m]
    if len(modes) != 1:
        raise SystemExit("sluice transform: give exactly one of --destination ID, --transformation FILE.js or "
                         "--destination-type TYPE")
    try:
        inputs = _read_events(args.events)
    except OSError as exc:
        raise SystemExit(f"sluice transform: cannot read {args.events}: {exc.strerror}") from None
    if args.destination:
        errors = _preview_workspace_destination(args, inputs)
    elif args.transformation:
        errors = _preview_user(args, inputs)
    else:
        errors = _preview_destination(args, inputs)
    sys.stdout.flush()
    if errors:
        print(f"sluice transform: {errors} of {len(inputs)} events failed", file=sys.stderr)
    return 1 if errors else 0


def preview_metadata(event: dict, index: int, source=None, dest=None) -> dict:
    """metadata(event) as the processor gives it (processor.user_transform.metadata_for); what a preview
    without a workspace cannot know is null, never absent."""
    from jobsdb.queue import GatewayJob
    from processor.user_transform import metadata_for

    job = GatewayJob(index + 1, 0, source.id if source else "", str(event.get("userId") or event.get("anonymousId")
                                                                      or ""), event, datetime.datetime.now(datetime.UTC))
    if source is not None and dest is not None:
        return metadata_for(job, event, source, dest)
    keys = ("sourceId", "sourceName", "sourceCategory", "workspaceId", "destinationId", "destinationType",
            "destinationName", "transformationId", "transformationVersionId")
    return {**dict.fromkeys(keys), "messageId": event.get("messageId", f"preview-{index}"), "jobId": job.job_id,
            "rudderId": job.user_key, "receivedAt": event.get("receivedAt"), "eventName": event.get("event"),
            "eventType": event.get("type")}


def _config_file_hint(config: object, path: str) -> None:
    if isinstance(config, dict) and "sources" in config:
        raise SystemExit(f"sluice transform: {path} is a workspace config, not one destination's config: "
                         "use --destination ID (with --workspace FILE)")


def _preview_workspace_destination(args: argparse.Namespace, inputs) -> int:
    """The processor's own pipeline for one destination of the workspace: fan-out rules, user
    transformation, destination payload. Returns how many events errored."""
    from config.settings import SettingsError, load_settings
    from config.workspace import ConfigError, load_workspace
    from jobsdb.queue import GatewayJob
    from processor.pipeline import REPLAY_KEY, Pipeline
    from transformers.user_js import UserTransformer

    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(f"sluice: {exc}") from None
    path = args.workspace or settings.config
    try:
        workspace = load_workspace(path)
    except ConfigError as exc:
        raise SystemExit(f"sluice transform: the workspace config has problems:\n{exc}") from None
    found = workspace.destination_by_id(args.destination)
    if found is None:
        ids = ", ".join(sorted(d.id for s in workspace.sources for d in s.destinations))
        raise SystemExit(f"sluice transform: no destination {args.destination!r} in {path} (there are: {ids})")
    source, dest = found
    now = datetime.datetime.now(datetime.UTC)
    jobs, lines = [], {}
    for index, event, error in inputs:
        if error is not None:
            lines[index] = {"index": index, "error": error}
            continue
        tagged = {**event, REPLAY_KEY: {"destination_id": dest.id}}  # this one destination, past dedup
        user = str(event.get("userId") or event.get("anonymousId") or "")
        jobs.append(GatewayJob(index + 1, 0, source.id, user, tagged, now))
    errors = sum(1 for line in lines.values() if "error" in line)
    with UserTransformer(args.time_limit_ms or settings.transform_time_limit_ms,
                         args.memory_limit_mb or settings.transform_memory_limit_mb) as user_js:
        outputs = Pipeline(user_js, settings.router_partitions, settings.transform_batch_size,
                           max_output_bytes=settings.transform_max_output_bytes).process(jobs, workspace, now)
    for out in outputs:
        index = out.job.job_id - 1
        line: dict = {"index": index, "destinationId": dest.id}
        if "messageId" in out.job.payload:
            line["messageId"] = out.job.payload["messageId"]
        rows = out.rt or out.batch_rt
        if rows:
            payloads = [json.loads(row[5]) for row in rows]
            if dest.is_warehouse:
                line["events"] = [p["event"] for p in payloads]  # loaded by the batch router as they are
            else:
                line["requests"] = [r for p in payloads for r in p["requests"]]
        if out.failed:
            line["error"] = "; ".join(f.reason for f in out.failed)
            errors += 1
        if out.filtered and not rows and not out.failed:
            line["filtered"] = sorted({rule for _s, _d, rule in out.filtered})
        lines[index] = line
    for index in sorted(lines):
        _emit(lines[index])
    return errors


def _preview_user(args: argparse.Namespace, inputs) -> int:
    from config.settings import SettingsError, load_settings
    from transformers.user_js import format_preview, run_file

    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(f"sluice: {exc}") from None
    try:
        with open(args.transformation, encoding="utf-8") as fh:
            code = fh.read()
    except OSError as exc:
        raise SystemExit(f"sluice transform: cannot read {args.transformation}: {exc.strerror}") from None
    events = [e for _, e, _ in inputs if e is not None]
    metadata = [preview_metadata(e, i) for i, e in enumerate(events)]
    result = run_file(code, events, metadata,
                      time_limit_ms=args.time_limit_ms or settings.transform_time_limit_ms,
                      memory_limit_mb=args.memory_limit_mb or settings.transform_memory_limit_mb)
    previews = iter(format_preview(result, events))
    for index, _event, error in inputs:
        if error is not None:
            _emit({"index": index, "error": error})
            continue
        line = json.loads(next(previews))
        line["index"] = index
        _emit(line)
    for log_line in result.logs:
        print(f"log: {log_line}", file=sys.stderr)
    return sum(1 for _i, _e, error in inputs if error is not None) + sum(
        1 for item in result.results if item.error is not None)


def _preview_destination(args: argparse.Namespace, inputs) -> int:
    from transformers import destinations
    from transformers.errors import TransformError

    if args.destination_type not in destinations.DESTINATION_TYPES:
        known = ", ".join(sorted(destinations.DESTINATION_TYPES))
        raise SystemExit(f"sluice transform: unknown destination type {args.destination_type!r} (known: {known})")
    config: dict = {}
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as fh:
                config = json.load(fh)
        except OSError as exc:
            raise SystemExit(f"sluice transform: cannot read {args.config}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise SystemExit(f"sluice transform: {args.config}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        _config_file_hint(config, args.config)
        if not isinstance(config, dict):
            raise SystemExit(f"sluice transform: {args.config}: expected the destination's config object")
    now = datetime.datetime.now(datetime.UTC)
    if args.now:
        try:
            now = datetime.datetime.fromisoformat(args.now.replace("Z", "+00:00"))
        except ValueError:
            raise SystemExit(f"sluice transform: --now: expected an ISO 8601 time, found {args.now!r}") from None
        if now.tzinfo is None:
            now = now.replace(tzinfo=datetime.UTC)
    errors = 0
    for index, event, error in inputs:
        line: dict = {"index": index}
        if event is not None and "messageId" in event:
            line["messageId"] = event["messageId"]
        if error is not None:
            line["error"] = error
        else:
            try:
                line["requests"] = destinations.transform(args.destination_type, event, config, now)
            except TransformError as exc:
                line["error"] = exc.reason
                line["status"] = exc.status
        errors += "error" in line
        _emit(line)
    return errors


# ---- replay of failed jobs and the admin API -------------------------------------------------------------

ADMIN_FLAGS = {
    "admin_host": ("--admin-host", str, "address the admin API binds"),
    "admin_port": ("--admin-port", int, "admin API port"),
}


def register_replay(sub, add: Callable, common_flags: dict) -> None:
    from ops.replay import add_arguments, cmd_replay

    p = add("replay", cmd_replay,
            "re-enqueue failed jobs in failure order: router failures re-enter the router queue (destination "
            "config applied afresh), transformation failures re-enter the processor (current transformation); "
            "replayed rows are marked, not deleted. Partitions are the database's (fixed by `sluice migrate`).")
    add_arguments(p)
    add("admin", cmd_admin, "serve the admin HTTP API (/admin/jobs, /admin/failed-jobs, /admin/replay); "
        "needs SLUICE_ADMIN_TOKEN", (common_flags, ADMIN_FLAGS))


def cmd_admin(args: argparse.Namespace) -> int:
    import dataclasses

    from config.logs import setup_logging
    from ops.admin import serve
    from ops.cli import _need_database, _settings

    overrides = {k: getattr(args, k) for k in ADMIN_FLAGS if getattr(args, k, None) is not None}
    settings = _need_database(dataclasses.replace(_settings(args), **overrides))
    setup_logging("admin", settings.log_level)
    return serve(settings)
