"""Lookup: where each event is now. From the rows jobsdb.inspect.lookup found (accepted events, their
delivery jobs, their dead letters), per event and per destination of its source: delivered, retrying,
held by the barrier, pending, failed, not processed yet, or filtered and by which rule.

Filtered events leave no row behind (filtered_counts keeps counts per day, not events), so which rule
filtered one is worked out again from the current workspace config with the processor's own rules, and
the page says so.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from processor import fanout

STATE = {0: "pending", 1: "delivered", 2: "failed"}


def explain(found: dict, workspace, masker, now: datetime, q: str, by: str, window: str) -> dict:
    accepted = sorted(found["accepted"], key=lambda a: a["job_id"])
    by_message: dict[tuple, list[dict]] = defaultdict(list)
    for a in accepted:
        by_message[(a["source_id"], _mid(a["payload"]))].append(a)
    jobs_of: dict[int, list[dict]] = defaultdict(list)
    gw_of_rt: dict[tuple[str, int], int] = {}
    for job in found["delivery"]:
        owner = _owner(job.get("payload"), job["source_id"], job["message_id"], by_message)
        if owner is not None:
            jobs_of[owner].append(job)
            gw_of_rt[(job["queue"], job["job_id"])] = owner
    dead_of: dict[int, list[dict]] = defaultdict(list)
    for dead in found["failed"]:
        owner = None
        if dead["original_queue"] == "gw_jobs":
            owner = dead["original_job_id"] if any(a["job_id"] == dead["original_job_id"] for a in accepted) else None
        elif dead["original_queue"]:
            owner = gw_of_rt.get((dead["original_queue"], dead["original_job_id"]))
        if owner is None:
            twins = by_message.get((dead["source_id"], dead["message_id"]))
            owner = twins[0]["job_id"] if twins else None
        if owner is not None:
            dead_of[owner].append(dead)
    events = [_event(a, jobs_of[a["job_id"]], dead_of[a["job_id"]], by_message, workspace, masker, now)
              for a in sorted(accepted, key=lambda a: a["job_id"], reverse=True)]
    return {"query": q, "by": by, "window": window, "as_of": now, "events": events,
            "config_note": None if workspace is not None else "the workspace config could not be read: "
                                                              "destinations and filter rules are unknown"}


def _mid(payload: Any) -> str | None:
    if isinstance(payload, dict) and payload.get("messageId") is not None:
        return str(payload["messageId"])
    return None


def _owner(payload: Any, source_id: str, message_id: str | None, by_message: dict) -> int | None:
    """The accepted event a delivery job came from: the gw job id the processor stored with it, else
    (a replayed job) the first accepted event with its messageId."""
    if isinstance(payload, dict) and isinstance(payload.get("gw_job_id"), int):
        twins = by_message.get((source_id, message_id), [])
        if any(t["job_id"] == payload["gw_job_id"] for t in twins):
            return payload["gw_job_id"]
    twins = by_message.get((source_id, message_id))
    return twins[0]["job_id"] if twins else None


def _event(a: dict, jobs: list[dict], dead: list[dict], by_message: dict, workspace, masker, now) -> dict:
    payload = a["payload"] if isinstance(a["payload"], dict) else {}
    source = workspace.source_by_id(a["source_id"]) if workspace is not None else None
    twins = by_message.get((a["source_id"], _mid(payload)), [])
    earlier = [t["job_id"] for t in twins if t["job_id"] < a["job_id"]]
    if a["state"] == 1:
        gateway = "processed"
    elif a["claimed_until"] is not None and a["claimed_until"] > now:
        gateway = "being processed"
    else:
        gateway = "waiting in the gateway queue for the processor"
    dests: dict[str, dict] = {}
    if source is not None:
        for d in source.destinations:
            dests[d.id] = {"id": d.id, "name": d.name, "type": d.type, "jobs": [], "dead_letters": [], "_dest": d}
    for job in jobs:
        entry = dests.setdefault(job["destination_id"], _unknown(job["destination_id"], job.get("payload")))
        entry["jobs"].append(_job(job, masker))
    for d in dead:
        entry = dests.setdefault(d["destination_id"] or "", _unknown(d["destination_id"] or "", None,
                                                                     d["destination_type"]))
        entry["dead_letters"].append(_dead(d, masker))
    out = []
    for entry in dests.values():
        status, detail = _status(entry, a, payload, gateway, earlier, source)
        entry.pop("_dest", None)
        out.append({**entry, "status": status, "detail": detail})
    return {"job_id": a["job_id"], "source_id": a["source_id"], "source_name": source.name if source else None,
            "received_at": a["received_at"], "message_id": _mid(payload), "type": payload.get("type"),
            "name": payload.get("event") or payload.get("name"), "user_key": a["user_key"],
            "gateway": gateway, "gateway_attempts": a["attempts"], "event": masker(payload),
            "duplicate_of": earlier[0] if earlier else None, "destinations": out}


def _unknown(dest_id: str, payload: Any, dest_type: str | None = None) -> dict:
    kind = payload.get("dest_type") if isinstance(payload, dict) else dest_type
    return {"id": dest_id, "name": "(not in the current workspace config)" if dest_id else "(no destination)",
            "type": kind or dest_type or "", "jobs": [], "dead_letters": [], "_dest": None}


def _job(job: dict, masker) -> dict:
    payload = job.get("payload") if isinstance(job.get("payload"), dict) else {}
    return {"queue": job["queue"], "job_id": job["job_id"], "state": STATE.get(job["state"], str(job["state"])),
            "attempts": job["attempts"], "created_at": job["created_at"], "first_attempt_at": job["first_attempt_at"],
            "last_attempt_at": job["last_attempt_at"], "next_attempt_at": job["next_attempt_at"],
            "last_status": job["last_status"], "last_error": masker.text(job["last_error"]),
            "last_response": masker.text(job["last_response"]), "blocked_by": job.get("blocked_by"),
            "event": masker(payload.get("event")), "requests": masker(payload.get("requests")),
            "replay_of": payload.get("replay_of")}


def _dead(d: dict, masker) -> dict:
    return {"id": d["id"], "stage": d["stage"], "reason": masker.text(d["reason"]), "status_code": d["status_code"],
            "response": masker.text(d["response"]), "attempts": d["attempts"],
            "attempt_history": masker(d["attempt_history"]), "failed_at": d["failed_at"],
            "replayed_at": d["replayed_at"], "replay_count": d["replay_count"], "replayed_into": d["replayed_into"],
            "event": masker(d["event"]), "payload": masker(d["payload"])}


def _status(entry: dict, a: dict, payload: dict, gateway: str, earlier: list[int], source) -> tuple[str, str]:
    jobs, dead = entry["jobs"], entry["dead_letters"]
    if any(j["state"] == "delivered" for j in jobs):
        j = next(j for j in jobs if j["state"] == "delivered")
        return "delivered", f"HTTP {j['last_status']} after {j['attempts']} attempt(s)"
    pending = [j for j in jobs if j["state"] == "pending"]
    if pending:
        j = pending[-1]
        if j["next_attempt_at"]:
            answer = f"HTTP {j['last_status']}" if j["last_status"] else "no answer"
            return "retrying", f"attempt {j['attempts']}: {answer}; next attempt at {j['next_attempt_at'].isoformat()}"
        if j["blocked_by"]:
            return "waiting", f"behind job {j['blocked_by']['job_id']} of the same user, which is retrying"
        return "pending", "in the router queue, waiting for the router"
    if dead:
        last = dead[-1]
        replayed = " (replayed)" if last["replayed_at"] else ""
        return "failed", f"{last['stage']}: {last['reason']}{replayed}"
    if jobs:
        return "failed", "aborted: moved to failed_jobs (the dead letter was not found in this window)"
    if a["state"] != 1:
        return "not processed", gateway
    dest = entry.get("_dest")
    if source is None:
        return "unknown", "the source is not in the current workspace config"
    if dest is None:
        return "unknown", "no delivery job found"
    if earlier:
        return "filtered", f"duplicate messageId: job {earlier[0]} was accepted first (the processor drops repeats)"
    rule = fanout.before_transform(payload, fanout.integrations_of(payload), dest)
    if rule is None and dest.transformation is None:
        rule = fanout.after_transform(payload, dest)
    if rule is not None:
        return "filtered", f"by rule {rule} (as the current workspace config decides)"
    if dest.transformation is not None:
        return "filtered", ("no delivery job: its transformation returned nothing, or a rule after it "
                            "(supported_message_types, event_filtering) filtered what it returned")
    return "unknown", ("no delivery job found: its dataset may have been dropped after the retention, or the "
                       "config changed since the event was processed")
