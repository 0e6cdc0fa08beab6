"""Live events: a tail of the queue tables themselves, pushed to the page with Server-Sent Events.

One reader thread per admin process, running only while a page listens, reads the rows added since its
last read: accepted events (gw_jobs), delivery jobs as transformed (rt_jobs, batch_rt_jobs: the
requests that will be sent), and follows those delivery jobs to their outcome (delivered with the
destination's answer, retrying, failed). Nothing is copied into another table.

Memory is bounded everywhere: at most ROWS_PER_POLL new rows per queue per read (when more arrived,
the newest are shown and the others counted), WATCH_MAX jobs followed, CLIENT_QUEUE items waiting per
browser. Whatever is not shown is counted and the page says "sampled"; nothing is dropped silently.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobsdb import inspect
from jobsdb.datasets import dataset_size
from jobsdb.db import UNAVAILABLE_ERRORS
from ops.admin_db import long_lived

log = logging.getLogger("sluice.admin")

POLL_SECONDS = 0.5
SUMMARIZE_SECONDS = 0.0   # how often the newest pages are summarised in the BRIN indexes (0: every poll)
ROWS_PER_POLL = 50        # new rows read per queue per poll (100/s: more than a page can draw); beyond it, sampled
LOOKBACK_IDS = 300        # ids re-read below the newest seen: a transaction that committed late still shows
WATCH_MAX = 2000          # delivery jobs followed to their outcome
WATCH_SECONDS = 600       # ... for at most this long (a job retrying for hours is on the Failures page)
CLIENT_QUEUE = 500        # items waiting for one browser; past it they are counted, not kept
RECENT = 100              # items a newly opened page starts with
MAX_CLIENTS = 8
MAX_EVENT_BYTES = 16_384  # a bigger event is shown as a summary; its JSON view loads it whole
IDLE_STOP_SECONDS = 30    # the reader stops this long after the last page closed
HEARTBEAT_SECONDS = 15


@dataclass(frozen=True)
class Filters:
    source: str = ""
    destination: str = ""
    type: str = ""
    user: str = ""
    text: str = ""

    @classmethod
    def from_args(cls, args) -> Filters:
        def get(name: str) -> str:
            return (args.get(name) or "").strip()[:200]

        return cls(get("source"), get("destination"), get("type").lower(), get("user"), get("text").lower())

    def match(self, item: dict) -> bool:
        if self.source and item.get("source_id") != self.source:
            return False
        if self.destination and item.get("destination_id") != self.destination:
            return False
        if self.type and (item.get("type") or "").lower() != self.type:
            return False
        if self.user and self.user not in (item.get("user_id"), item.get("anonymous_id"), item.get("user_key")):
            return False
        if self.text and self.text not in searchable(item):
            return False
        return True


class Client:
    """One open page: its filters and the items waiting for it."""

    def __init__(self, filters: Filters):
        self.filters = filters
        self.items: deque[dict] = deque()
        self.dropped = 0      # items this page could not take fast enough
        self.skipped = 0      # items the reader did not read (more than ROWS_PER_POLL new rows)
        self.cond = threading.Condition()
        self.closed = False

    def offer(self, items: list[dict], skipped: int) -> None:
        with self.cond:
            for item in items:
                if len(self.items) >= CLIENT_QUEUE:
                    self.dropped += 1
                else:
                    self.items.append(item)
            self.skipped += skipped
            self.cond.notify()

    def take(self, timeout: float) -> tuple[list[dict], int, int]:
        """(items, dropped since the last take, skipped since the last take); waits up to timeout."""
        with self.cond:
            if not self.items and not self.dropped and not self.skipped and not self.closed:
                self.cond.wait(timeout)
            items, self.items = list(self.items), deque()
            dropped, skipped, self.dropped, self.skipped = self.dropped, self.skipped, 0, 0
            return items, dropped, skipped

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()


@dataclass
class _Watched:
    table: str
    base: dict          # the transformed item: what a later outcome item repeats
    attempts: int
    since: float


class LiveTail:
    def __init__(self, dsn: str, masker, stop: threading.Event):
        self.dsn = dsn
        self.masker = masker          # a callable returning the current Masker
        self.stop = stop
        self.clients: set[Client] = set()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.recent: deque[dict] = deque(maxlen=RECENT)
        self.after: dict[str, int] = {}
        self.seen: dict[str, OrderedDict[int, None]] = {}
        self.watch_rt: OrderedDict[tuple[str, int], _Watched] = OrderedDict()
        self.stats = {"polls": 0, "items": 0, "skipped": 0, "not_followed": 0, "errors": 0}
        self._summarized = 0.0
        self._brin: dict = {}  # the BRIN indexes of the newest datasets (inspect.summarize_newest)
        self._size: int | None = None
        self._last_client = time.monotonic()

    # -- clients ---------------------------------------------------------------------------------------

    def subscribe(self, filters: Filters, recent: bool = True) -> Client | None:
        """A new page; it starts with the latest items the tail read (unless `recent` is off: a resume)."""
        with self.lock:
            if len(self.clients) >= MAX_CLIENTS:
                return None
            client = Client(filters)
            self.clients.add(client)
            if recent:
                client.offer([i for i in self.recent if filters.match(i)], 0)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="admin-live-tail", daemon=True)
                self.thread.start()
            return client

    def unsubscribe(self, client: Client) -> None:
        with self.lock:
            self.clients.discard(client)
            self._last_client = time.monotonic()
        client.close()

    def stream(self, client: Client):
        """The SSE text for one page, until it goes away or the service stops."""
        try:
            yield "retry: 2000\n\n"
            yield _sse("hello", {"poll_seconds": POLL_SECONDS, "rows_per_poll": ROWS_PER_POLL,
                                 "client_queue": CLIENT_QUEUE})
            while not self.stop.is_set():
                items, dropped, skipped = client.take(HEARTBEAT_SECONDS)
                if client.closed:
                    return
                if dropped or skipped:
                    yield _sse("sampled", {"dropped": dropped, "skipped": skipped})
                for item in items:
                    yield _sse("item", {k: v for k, v in item.items() if k != "_text"})
                if not items and not dropped and not skipped:
                    yield ": keepalive\n\n"
        finally:
            self.unsubscribe(client)

    # -- the reader ------------------------------------------------------------------------------------

    def _run(self) -> None:
        db = long_lived(self.dsn, "sluice-admin-live", self.stop, lock_timeout_ms=20, logger=log)
        try:
            while not self.stop.is_set():
                with self.lock:
                    idle = not self.clients and time.monotonic() - self._last_client > IDLE_STOP_SECONDS
                    if idle:
                        self.thread = None
                        return
                try:
                    if self.clients:
                        self._poll(db.get())
                        db.healthy()
                except UNAVAILABLE_ERRORS as exc:
                    self.stats["errors"] += 1
                    log.warning("live tail: database unavailable", extra={"error": str(exc).strip()[:200]})
                    db.drop()
                except Exception:  # noqa: BLE001 - the reader must outlive any one bad read
                    self.stats["errors"] += 1
                    log.exception("live tail: read failed")
                    db.drop(failed=False)
                self.stop.wait(POLL_SECONDS)
        finally:
            db.close()

    def _poll(self, conn) -> None:
        items: list[dict] = []
        skipped = 0
        with conn.cursor() as cur:
            last = inspect.sequences(cur)
            if self._size is None:
                self._size = dataset_size(cur)
            if time.monotonic() - self._summarized >= SUMMARIZE_SECONDS:
                inspect.summarize_newest(cur, last, self._size, self._brin)
                self._summarized = time.monotonic()
            rows, n = self._new_rows(cur, "gw_jobs", last["gw_jobs"])
            skipped += n
            items += [self._accepted(r) for r in rows]
            for table in inspect.DELIVERY_TABLES:
                rows, n = self._new_rows(cur, table, last[table])
                skipped += n
                for r in rows:
                    items += self._transformed(table, r)
            items += self._follow(cur)
        self.stats["polls"] += 1
        self.stats["items"] += len(items)
        self.stats["skipped"] += skipped
        masker = self.masker()
        shown = []
        with self.lock:
            clients = list(self.clients)
        texts = any(c.filters.text for c in clients)
        for item in items:
            item = masker(item)
            if texts:
                item["_text"] = _lower_json(item)
            shown.append(item)
        self.recent.extend(shown)
        for client in clients:
            client.offer([i for i in shown if client.filters.match(i)], skipped)

    def _new_rows(self, cur, table: str, last_id: int) -> tuple[list[tuple], int]:
        """Rows added since the previous poll (at most ROWS_PER_POLL of the newest), and how many were
        left unread. Ids just below the newest seen are read again, for transactions that committed late."""
        seen = self.seen.setdefault(table, OrderedDict())
        after = self.after.get(table)
        if after is None:  # a fresh start: the last few only
            after = max(0, last_id - 20)
        skipped = 0
        start = max(0, after - LOOKBACK_IDS)
        if last_id - after > ROWS_PER_POLL:  # more than a poll shows: the newest, and the rest counted
            skipped = last_id - after - ROWS_PER_POLL
            after = start = last_id - ROWS_PER_POLL
        known = [i for i in seen if i > start]  # read already: Postgres skips them before taking them apart
        if table == "gw_jobs":
            rows = inspect.tail_accepted(cur, start, ROWS_PER_POLL + LOOKBACK_IDS, MAX_EVENT_BYTES, known)
        else:
            rows = inspect.tail_delivery(cur, table, start, ROWS_PER_POLL + LOOKBACK_IDS, MAX_EVENT_BYTES, known)
        new = [r for r in rows if r[0] not in seen]
        for r in new:
            seen[r[0]] = None
        while len(seen) > 4 * (ROWS_PER_POLL + LOOKBACK_IDS):
            seen.popitem(last=False)
        self.after[table] = max([after, *(r[0] for r in rows)])
        return new, skipped

    @staticmethod
    def _accepted(r: tuple) -> dict:
        job_id, source, user_key, received_at, _state, kind, name, mid, user_id, anon, payload = r
        return {"stage": "accepted", "queue": "gw_jobs", "job_id": job_id, "at": _iso(received_at),
                "source_id": source, "destination_id": None, "type": kind, "name": name, "message_id": mid,
                "user_id": user_id, "anonymous_id": anon, "user_key": user_key,
                "payload": payload, "payload_note": None if payload is not None else _too_big()}

    def _transformed(self, table: str, r: tuple) -> list[dict]:
        (job_id, dest, source, user_key, mid, created_at, state, attempts, status, last_at, next_at, error,
         response, kind, name, user_id, anon, dest_type, requests) = r
        base = {"queue": table, "job_id": job_id, "source_id": source, "destination_id": dest,
                "dest_type": dest_type, "type": kind, "name": name, "message_id": mid, "user_id": user_id,
                "anonymous_id": anon, "user_key": user_key, "payload": requests,
                "payload_note": None if requests is not None else _too_big_or_replay()}
        out = [{**base, "stage": "transformed", "at": _iso(created_at)}]
        if state == 0:
            self._watch(table, job_id, base, attempts)
            if attempts:
                out.append(self._outcome(base, state, attempts, status, last_at, next_at, error, response, None))
        elif state == 2:
            self._watch(table, job_id, base, -1)  # followed in this same poll, with its dead letter's reason
        else:
            out.append(self._outcome(base, state, attempts, status, last_at, next_at, error, response, None))
        return out

    def _watch(self, table: str, job_id: int, base: dict, attempts: int) -> None:
        self.watch_rt[(table, job_id)] = _Watched(table, base, attempts, time.monotonic())
        while len(self.watch_rt) > WATCH_MAX:
            self.watch_rt.popitem(last=False)
            self.stats["not_followed"] += 1

    def _follow(self, cur) -> list[dict]:
        now = time.monotonic()
        for key in [k for k, w in self.watch_rt.items() if now - w.since > WATCH_SECONDS]:
            del self.watch_rt[key]
            self.stats["not_followed"] += 1
        out: list[dict] = []
        for table in inspect.DELIVERY_TABLES:
            ids = [jid for (t, jid) in self.watch_rt if t == table]
            if not ids:
                continue
            changed = []
            for job_id, state, attempts, status, last_at, next_at, error, response in inspect.delivery_status(
                    cur, table, ids):
                w = self.watch_rt[(table, job_id)]
                if state != 0 or attempts != w.attempts:
                    changed.append((w, job_id, state, attempts, status, last_at, next_at, error, response))
            failed = [c for c in changed if c[2] == 2]
            reasons = inspect.dead_letter_reasons(cur, table, [c[0].base["destination_id"] for c in failed],
                                                  [c[1] for c in failed]) if failed else {}
            for w, job_id, state, attempts, status, last_at, next_at, error, response in changed:
                out.append(self._outcome(w.base, state, attempts, status, last_at, next_at, error, response,
                                         reasons.get(job_id)))
                if state != 0:
                    del self.watch_rt[(table, job_id)]
                else:
                    w.attempts = attempts
        return out

    @staticmethod
    def _outcome(base: dict, state: int, attempts: int, status, last_at, next_at, error, response,
                 dead: tuple | None) -> dict:
        if state == 1:
            return {**base, "stage": "delivered", "at": _iso(last_at), "attempt": attempts, "status": status,
                    "response": response}
        if state == 2:
            reason, dead_status, dead_response, failed_at = dead if dead else (None, status, error, None)
            return {**base, "stage": "failed", "at": _iso(failed_at or last_at), "attempt": attempts,
                    "status": dead_status, "reason": reason or "moved to failed_jobs", "response": dead_response}
        return {**base, "stage": "retrying", "at": _iso(last_at), "attempt": attempts, "status": status,
                "error": error, "next_attempt_at": _iso(next_at)}

    def status(self) -> dict:
        with self.lock:
            return {"clients": len(self.clients), "running": self.thread is not None and self.thread.is_alive(),
                    "followed": len(self.watch_rt), **self.stats}


def searchable(item: dict) -> str:
    """The item as lower-case text for the text filter: made once per item by the reader while a page
    filters on text (items are shared between threads once published: never changed after), else now."""
    text = item.get("_text")
    return text if text is not None else _lower_json(item)


def _lower_json(item: dict) -> str:
    return json.dumps(item, ensure_ascii=False, default=str).lower()


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _too_big() -> str:
    return f"larger than {MAX_EVENT_BYTES // 1024} KB: open the JSON view to see it whole"


def _too_big_or_replay() -> str:
    return (f"no stored requests (a replayed job, transformed again when it is sent) or larger than "
            f"{MAX_EVENT_BYTES // 1024} KB")
