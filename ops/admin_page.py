"""The admin page: log in with the token; Overview, Live events, Failures (replay, abort), Lookup.

Server-rendered Jinja templates (autoescaped: every value from an event, an answer or a config is text,
never HTML) and a little JavaScript (ops/static/admin/*.js: the live tail, filled with textContent only).
Every handler is a module-level function of this Blueprint; state comes from ops.admin.state().
"""

from __future__ import annotations

import hmac
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import (
    Blueprint,
    Response,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    stream_with_context,
    url_for,
)
from psycopg2 import errors as pg_errors

from jobsdb import inspect
from jobsdb.db import CONFLICT_ERRORS
from jobsdb.replay import count, list_failed, replay
from ops import admin_auth
from ops.admin import error, int_arg, state
from ops.admin_db import STATEMENTS
from ops.admin_live import Filters
from ops.admin_secrets import HIDDEN
from ops.jobs import iso_times
from ops.replay import SelectionError, parse_time, selection_from, targets_text

log = logging.getLogger("sluice.admin")
bp = Blueprint("admin_page", __name__, url_prefix="/admin", static_folder="static/admin",
               static_url_path="/static")

QUEUES = {"gw": "gw_jobs", "rt": "rt_jobs", "batch_rt": "batch_rt_jobs"}
LOOKUP_WINDOWS = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600, "7d": 7 * 24 * 3600}
FAILED_PAGE = 50
SELECTOR_FIELDS = ("destination", "source", "stage", "status", "reason", "since", "until", "ids",
                   "include_replayed")


@bp.app_context_processor
def page_globals() -> dict:
    return {"csrf_token": admin_auth.csrf_token, "HIDDEN": HIDDEN, "workspace_error": state().workspace_error,
            "fmt_age": fmt_age, "fmt_time": fmt_time, "pretty": pretty}


# ---- access -----------------------------------------------------------------------------------------------

@bp.get("/")
def index():
    return redirect(url_for("admin_page.overview"))


@bp.get("/login")
def login():
    st = state()
    if admin_auth.session_ok(st.settings.admin_token):
        return redirect(admin_auth.safe_next(request.args.get("next")))
    admin_auth.csrf_token()
    return render_template("admin/login.html", title="Log in", next=request.args.get("next", ""), failed=False)


@bp.post("/login")
def login_post():
    st = state()
    address = request.remote_addr or "?"
    if st.throttle.blocked(address):
        return render_template("admin/login.html", title="Log in", next=request.form.get("next", ""),
                               failed=True, message="too many wrong tokens: wait a minute"), 429
    given = request.form.get("token", "").strip()
    if given and hmac.compare_digest(given.encode(), st.settings.admin_token.encode()):
        admin_auth.open_session(st.settings.admin_token)
        log.info("admin page: logged in", extra={"remote": address})
        return redirect(admin_auth.safe_next(request.form.get("next")))
    st.throttle.failed(address)
    log.warning("admin page: wrong token", extra={"remote": address})
    return render_template("admin/login.html", title="Log in", next=request.form.get("next", ""), failed=True,
                           message="wrong token"), 401


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("admin_page.login"))


# ---- overview ---------------------------------------------------------------------------------------------

def _overview() -> dict:
    st = state()
    return st.overview.get(st.overview_db(), st.workspace(), st.masker())


@bp.get("/ui/overview")
def overview():
    data = _overview()
    return render_template("admin/overview.html", title="Overview", active="overview", o=data,
                           chart=chart_geometry(data["chart"]))


@bp.get("/api/overview")
def overview_json():
    return jsonify(iso_times(_overview()))


# ---- live events ------------------------------------------------------------------------------------------

@bp.get("/ui/live")
def live():
    workspace = state().workspace()
    sources = [s.id for s in workspace.sources] if workspace else []
    dests = sorted({d.id for s in workspace.sources for d in s.destinations}) if workspace else []
    return render_template("admin/live.html", title="Live events", active="live", sources=sources,
                           destinations=dests, filters=Filters.from_args(request.args))


@bp.get("/api/live")
def live_stream():
    st = state()
    client = st.live.subscribe(Filters.from_args(request.args), recent=request.args.get("recent") != "0")
    if client is None:
        return error(503, "too many live-event pages are open: close one and try again")
    response = Response(stream_with_context(st.live.stream(client)), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # a proxy in front must not hold the stream back
    return response


@bp.get("/api/stats")
def stats():
    """What this admin process costs: statements run on Postgres since it started, the live tail's state."""
    return jsonify({"statements": STATEMENTS.snapshot(), "live": state().live.status()})


# ---- failures ---------------------------------------------------------------------------------------------

def _selection(values) -> Any:
    return selection_from(lambda word: [v for v in values.getlist(word) if v not in (None, "")])


@bp.get("/ui/failures")
def failures():
    st = state()
    args = request.args
    problem = None
    try:
        sel = _selection(args)
        before = int_arg("before_id", args.get("before_id"), 0, 0) or None
    except SelectionError as exc:
        problem, sel, before = str(exc), selection_from(lambda w: []), None
    masker = st.masker()
    dest = args.get("destination") or None
    with st.db() as conn, conn.cursor() as cur:
        matched, _lo, _hi = count(cur, sel)
        rows = inspect.failed_page(cur, sel, before, FAILED_PAGE)
        retrying = inspect.retrying_jobs(cur, dest)
        conn.commit()
    for r in rows:
        r["response"] = masker.text(r["response"])
        r["reason"] = masker.text(r["reason"])
    for r in retrying:
        r["last_error"] = masker.text(r["last_error"])
    older_url = None
    if len(rows) == FAILED_PAGE:
        kept = {k: args.getlist(k) for k in args if k != "before_id"}
        older_url = url_for("admin_page.failures", **kept, before_id=rows[-1]["id"])
    return render_template("admin/failures.html", title="Failures", active="failures", rows=rows, matched=matched,
                           retrying=retrying, sel=sel, problem=problem, older_url=older_url,
                           selectors=_selector_values(args))


@bp.get("/ui/failed/<int:failed_id>")
def failed_detail(failed_id: int):
    st = state()
    with st.db() as conn, conn.cursor() as cur:
        row = inspect.failed_one(cur, failed_id)
        conn.commit()
    if row is None:
        return render_template("admin/message.html", title="Not found", message=f"no failed job {failed_id}"), 404
    masker = st.masker()
    for key in ("reason", "response"):
        row[key] = masker.text(row[key])
    for key in ("event", "payload", "attempt_history"):
        row[key] = masker(row[key])
    return render_template("admin/failed.html", title=f"Failed job {failed_id}", active="failures", f=row)


@bp.get("/ui/job/<queue>/<int:job_id>")
def job_detail(queue: str, job_id: int):
    st = state()
    table = QUEUES.get(queue)
    if table is None:
        return render_template("admin/message.html", title="Not found", message="no such queue"), 404
    row = _load_job(table, job_id)
    if row is None:
        return render_template("admin/message.html", title="Not found",
                               message=f"no job {job_id} in {table} (its dataset may have been dropped)"), 404
    masker = st.masker()
    row = masker(iso_times(row))
    return render_template("admin/job.html", title=f"{table} job {job_id}", active="live", job=row, table=table)


@bp.get("/api/job/<queue>/<int:job_id>")
def job_json(queue: str, job_id: int):
    st = state()
    table = QUEUES.get(queue)
    if table is None:
        return error(404, "no such queue: gw, rt or batch_rt")
    row = _load_job(table, job_id)
    if row is None:
        return error(404, f"no job {job_id} in {table}")
    return jsonify(st.masker()(iso_times(row)))


def _load_job(table: str, job_id: int) -> dict | None:
    with state().db() as conn, conn.cursor() as cur:
        row = inspect.gw_job(cur, job_id) if table == "gw_jobs" else inspect.delivery_job(cur, table, job_id)
        conn.commit()
    return row


@bp.post("/ui/replay")
def replay_form():
    """Replay from the page: the first POST is a dry run (a count and the first rows, nothing changed);
    the confirmation POSTs the same selection with the dry run's time as `until`, so failures that came
    after what the operator saw are not replayed with it."""
    st = state()
    form = request.form
    try:
        sel = _selection(form)
    except SelectionError as exc:
        flash(f"replay: {exc}", "error")
        return redirect(url_for("admin_page.failures"))
    if not sel.narrowed and form.get("all") != "yes":
        flash("replay: choose which failed jobs first (destination, source, stage, status, reason, time, ids)",
              "error")
        return redirect(url_for("admin_page.failures"))
    if form.get("confirm") != "yes":
        with st.db() as conn, conn.cursor() as cur:
            as_of = inspect.db_now(cur)
            matched, _lo, _hi = count(cur, sel)
            first = list_failed(cur, sel, limit=20)
            conn.commit()
        masker = st.masker()
        for r in first:
            r["reason"] = masker.text(r["reason"])
        return render_template("admin/replay_confirm.html", title="Replay", active="failures", matched=matched,
                               first=first, selectors=_selector_values(form), as_of=as_of.isoformat(),
                               describe=sel.describe(), all=form.get("all") == "yes")
    try:
        expected = int_arg("count", form.get("count"), 0, 0)
        as_of = form.get("as_of") or ""
        capped = selection_from(lambda word: _capped_until(form, word, as_of))
    except SelectionError as exc:
        flash(f"replay: {exc}", "error")
        return redirect(url_for("admin_page.failures"))
    if expected == 0:
        flash("replay: nothing to replay", "info")
        return redirect(url_for("admin_page.failures"))
    with st.db() as conn:
        result = replay(conn, capped, f"admin-page:{request.remote_addr}", limit=expected)
    log.info("replayed failed jobs", extra={"replayed": result.selected, "selection": capped.describe(),
                                            "remote": request.remote_addr, "from": "admin page"})
    lines = targets_text(result.targets)
    flash(f"replayed {result.selected} failed jobs (of {expected} counted in the dry run); "
          + "; ".join(line.strip() for line in lines), "ok")
    return redirect(url_for("admin_page.failures"))


def _capped_until(form, word: str, as_of: str) -> list:
    """The form's selector values, with `until` no later than the dry run's time."""
    values = [v for v in form.getlist(word) if v not in (None, "")]
    if word != "until":
        return values
    if not as_of:
        raise SelectionError("the confirmation lost the dry run's time: start again")
    cap = parse_time(as_of)
    return [min(parse_time(values[0]), cap).isoformat() if values else cap.isoformat()]


@bp.post("/ui/abort")
def abort():
    """"Abort now" for a job in backoff: to failed_jobs with a reason naming the operator (replayable)."""
    st = state()
    table = QUEUES.get(request.form.get("queue", ""))
    try:
        job_id = int_arg("job_id", request.form.get("job_id"), 0, 1)
    except SelectionError as exc:
        flash(f"abort: {exc}", "error")
        return redirect(url_for("admin_page.failures"))
    if table not in inspect.DELIVERY_TABLES:
        flash("abort: only delivery jobs (rt, batch_rt) can be aborted", "error")
        return redirect(url_for("admin_page.failures"))
    try:
        with st.db() as conn:
            dead = inspect.abort_retrying(conn, table, job_id, f"admin-page:{request.remote_addr}")
    except (*CONFLICT_ERRORS, pg_errors.LockNotAvailable):
        flash(f"abort: job {job_id} is being written by a router right now: try again in a moment", "error")
        return redirect(url_for("admin_page.failures"))
    if dead is None:
        flash(f"abort: job {job_id} was not aborted: it is not retrying any more, or its next attempt is due "
              f"within {inspect.ABORT_MARGIN_SECONDS:g} s (a router may be sending it)", "error")
    else:
        log.info("aborted a retrying job", extra={"table": table, "job_id": job_id, "remote": request.remote_addr,
                                                  "destination_id": dead.destination_id})
        flash(f"aborted job {job_id} ({dead.destination_id}): it is in failed_jobs now and can be replayed", "ok")
    return redirect(url_for("admin_page.failures"))


# ---- lookup -----------------------------------------------------------------------------------------------

@bp.get("/ui/lookup")
def lookup():
    args = request.args
    q = (args.get("q") or "").strip()
    by = args.get("by") if args.get("by") in ("message", "user") else "message"
    window = args.get("window") if args.get("window") in LOOKUP_WINDOWS else "1h"
    result = trace(q, by, window) if q else None
    return render_template("admin/lookup.html", title="Lookup", active="lookup", q=q, by=by, window=window,
                           windows=list(LOOKUP_WINDOWS), result=result)


@bp.get("/api/lookup")
def lookup_json():
    args = request.args
    if args.get("message_id"):
        q, by = args["message_id"], "message"
    elif args.get("user_id"):
        q, by = args["user_id"], "user"
    else:
        return error(400, "give message_id or user_id (and window: 15m, 1h, 6h, 24h or 7d)")
    window = args.get("window") if args.get("window") in LOOKUP_WINDOWS else "1h"
    return jsonify(iso_times(trace(q.strip(), by, window)))


def trace(q: str, by: str, window: str) -> dict:
    """Where each matching event is now: accepted (and processed or not), then per destination of its
    source delivered / retrying / pending / failed / filtered, with the payload at each step."""
    from ops.admin_trace import explain

    st = state()
    since = datetime.now(UTC) - timedelta(seconds=LOOKUP_WINDOWS[window])
    with st.db() as conn, conn.cursor() as cur:
        found = inspect.lookup(cur, message_id=q if by == "message" else None, user=q if by == "user" else None,
                               since=since)
        now = inspect.db_now(cur)
        conn.commit()
    return explain(found, st.workspace(), st.masker(), now, q, by, window)


# ---- helpers for templates --------------------------------------------------------------------------------

def _selector_values(values) -> dict[str, list[str]]:
    return {k: [v for v in values.getlist(k) if v not in (None, "")] for k in SELECTOR_FIELDS}


def pretty(value: Any) -> str:
    """JSON text for a <pre> (the template escapes it)."""
    if value is None:
        return "null"
    return json.dumps(iso_times(value), indent=2, ensure_ascii=False, sort_keys=False, default=str)


def fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def fmt_time(value: Any) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def chart_geometry(chart: dict, width: int = 600, height: int = 64) -> dict:
    """Bars for each destination's last hour (delivered, failures stacked on top), in SVG coordinates."""
    minutes = chart["minutes"]
    slot = width / minutes
    rows = []
    for s in chart["series"]:
        top = max([d + f for d, f in zip(s["delivered"], s["failed"], strict=True)] + [1])
        bars = []
        for i, (d, f) in enumerate(zip(s["delivered"], s["failed"], strict=True)):
            dh = round(height * d / top, 1)
            fh = round(height * f / top, 1)
            x = round(i * slot + 0.5, 1)
            if d:
                bars.append({"x": x, "y": round(height - dh, 1), "h": dh, "w": round(slot - 1, 1), "kind": "ok",
                             "title": f"{d} delivered"})
            if f:
                bars.append({"x": x, "y": round(height - dh - fh, 1), "h": fh, "w": round(slot - 1, 1),
                             "kind": "bad", "title": f"{f} failed"})
        rows.append({"destination_id": s["destination_id"] or "(no destination)", "bars": bars, "max": top,
                     "delivered": sum(s["delivered"]), "failed": sum(s["failed"]),
                     "per_minute_delivered": s["delivered"], "per_minute_failed": s["failed"]})
    return {"width": width, "height": height, "rows": rows, "first_minute": chart["first_minute"],
            "minutes": minutes}

