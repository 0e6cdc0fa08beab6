"""One delivery round for one destination: send claimed jobs in per-user order, batch where the API allows,
isolate a rejected event by splitting its batch, and decide each job's outcome."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from config.workspace import Destination
from jobsdb.processing import FailedRow
from jobsdb.routing import DeliveryJob, Outcomes
from router.backoff import RetryPolicy
from router.classify import Verdict, classify
from router.http import Answer
from router.throttle import SharedRate
from transformers import destinations as dest_transformers
from transformers.errors import TransformError

Send = Callable[[dict, float], Answer]  # (request, timeout in seconds) -> answer
MIN_REQUEST_SECONDS = 0.25  # a request is not started with less time than this before the round must end


@dataclass
class _Item:
    job: DeliveryJob
    request: dict


@dataclass
class _JobState:
    sent_ok: int = 0
    verdict: Verdict | None = None   # RETRY / THROTTLED / ABORT once decided
    answer: Answer | None = None
    requests: list[dict] = field(default_factory=list)
    reason: str | None = None


class Round:
    """Delivers one claimed slice of jobs of one destination (one thread per user group).

    Two times bound it (time.monotonic()): no request starts after `deadline`, and every request ends by
    `finish_by` — its timeout is cut to the time left — so that the round's outcomes are committed before
    its partition leases can expire and another router could deliver the same users' events."""

    def __init__(self, destination: Destination, policy: RetryPolicy, send: Send, limiter: SharedRate | None,
                 stop: threading.Event, table: str = "rt_jobs", deadline: float | None = None,
                 finish_by: float | None = None, timeout: float = 30.0):
        self.dest = destination
        self.finish_by = finish_by if finish_by is not None else float("inf")
        self.deadline = min(deadline if deadline is not None else float("inf"), self.finish_by)
        self.timeout = timeout
        self.policy = policy
        self.send = send
        self.limiter = limiter
        self.stop = stop
        self.table = table
        self.batching = dest_transformers.supports_batching(destination.type)

    # -- the round -------------------------------------------------------------------------------------

    def run(self, jobs: Sequence[DeliveryJob], pool: ThreadPoolExecutor | None, groups: int) -> Outcomes:
        by_group: dict[int, list[DeliveryJob]] = defaultdict(list)
        for job in jobs:  # one user's jobs always land in one group, in order
            by_group[hash(job.user_key) % max(groups, 1)].append(job)
        if pool is None or len(by_group) == 1:
            states = [self._deliver_group(g) for g in by_group.values()]
        else:
            states = list(pool.map(self._deliver_group, by_group.values()))
        merged: dict[int, _JobState] = {}
        for s in states:
            merged.update(s)
        return self._outcomes(jobs, merged)

    def _deliver_group(self, jobs: list[DeliveryJob]) -> dict[int, _JobState]:
        states = {j.job_id: _JobState() for j in jobs}
        items: list[_Item] = []
        now = datetime.now(UTC)
        for job in jobs:
            st = states[job.job_id]
            requests = job.payload.get("requests") if isinstance(job.payload, dict) else None
            if requests is None:  # replayed with the current config: transform now
                try:
                    event = job.payload.get("event") if isinstance(job.payload, dict) else None
                    requests = dest_transformers.transform(self.dest.type, event or {}, self.dest.config, now)
                except TransformError as exc:
                    st.verdict, st.reason = Verdict.ABORT, f"destination transform failed: {exc.reason}"
                    continue
                except Exception as exc:  # noqa: BLE001 - one job's bad data fails that job, not the round
                    st.verdict, st.reason = Verdict.ABORT, f"destination transform failed: {type(exc).__name__}: {exc}"
                    continue
            if not isinstance(requests, list) or not all(isinstance(r, dict) and r.get("endpoint") for r in requests):
                st.verdict, st.reason = Verdict.ABORT, "the stored delivery requests are malformed"
                continue
            st.requests = list(requests)
            items.extend(_Item(job, r) for r in requests)
        self._send_items(items, states, set())
        return states

    def _send_items(self, items: list[_Item], states: dict[int, _JobState], blocked: set[str]) -> None:
        if not items:
            return
        if self.batching and len(items) > 1:
            groups = dest_transformers.batch_requests(self.dest.type, [it.request for it in items], self.dest.config)
        else:
            groups = [(it.request, [k]) for k, it in enumerate(items)]
        for merged, idxs in groups:
            if self.stop.is_set() or time.monotonic() > self.deadline or self._time_left() < MIN_REQUEST_SECONDS:
                return  # what was not sent is released and goes first next round
            members = [items[k] for k in idxs
                       if items[k].job.user_key not in blocked and states[items[k].job.job_id].verdict is None]
            if not members:
                continue
            if len(members) < len(idxs):  # some were held back since the merge: merge the rest again
                self._send_items(members, states, blocked)
                continue
            if self.limiter is not None and not self.limiter.acquire(len(members), self.stop, self.deadline):
                return  # no budget before the round must end: these go first next round
            left = self._time_left()
            if left < MIN_REQUEST_SECONDS:
                return
            answer = self.send(merged, min(self.timeout, left))
            verdict = Verdict.ABORT if answer.invalid else classify(answer.status)
            if verdict is Verdict.DELIVERED:
                for m in members:
                    st = states[m.job.job_id]
                    st.sent_ok += 1
                    st.answer = answer
            elif verdict in (Verdict.RETRY, Verdict.THROTTLED):
                for m in members:  # the barrier: this user's later jobs wait for this one
                    st = states[m.job.job_id]
                    st.verdict, st.answer = verdict, answer
                    blocked.add(m.job.user_key)
            elif len(members) > 1:
                half = len(members) // 2  # a rejected batch: split it to find the event it refuses
                self._send_items(members[:half], states, blocked)
                self._send_items(members[half:], states, blocked)
            else:
                st = states[members[0].job.job_id]
                st.verdict, st.answer = Verdict.ABORT, answer

    def _time_left(self) -> float:
        return self.finish_by - time.monotonic()

    # -- outcomes --------------------------------------------------------------------------------------

    def _outcomes(self, jobs: Sequence[DeliveryJob], states: dict[int, _JobState]) -> Outcomes:
        out = Outcomes([], [], [], [])
        now = datetime.now(UTC)
        for job in jobs:
            st = states[job.job_id]
            if st.verdict is None:
                if st.sent_ok == len(st.requests):
                    answer = st.answer  # kept with the job (capped): what the destination said
                    out.delivered.append((job.job_id, answer.status if answer else 200,
                                          answer.body if answer else None))
                else:
                    out.released.append(job.job_id)  # held behind another job of the same user
                continue
            status = st.answer.status if st.answer else None
            body = st.answer.body if st.answer else None
            if st.verdict is Verdict.ABORT:
                reason = st.reason or f"destination answered {status}: {(body or '')[:300]}"
                out.aborted.append((job.job_id, self._dead_letter(job, st, reason, job.attempts + 1)))
                continue
            counted = 1 if st.verdict is Verdict.RETRY else 0
            attempts = job.attempts + counted
            if self.policy.exhausted(attempts, job.first_attempt_at, now, counted=bool(counted)):
                what = f"HTTP {status}" if status is not None else (body or "no answer")[:200]
                reason = f"retry budget exhausted after {attempts} attempts: {what}"
                out.aborted.append((job.job_id, self._dead_letter(job, st, reason, attempts)))
                continue
            retry_after = st.answer.retry_after if st.answer else None
            delay = self.policy.delay(max(attempts, 1), retry_after)
            error = (body or "")[:500] if status is not None else (body or "no answer")[:500]
            out.retry.append((job.job_id, counted, delay, status if status is not None else 0, error))
        return out

    def _dead_letter(self, job: DeliveryJob, st: _JobState, reason: str, attempts: int) -> FailedRow:
        return FailedRow(
            stage="router", source_id=job.source_id, destination_id=self.dest.id, destination_type=self.dest.type,
            user_key=job.user_key, message_id=job.message_id, event=job.payload.get("event", job.payload),
            reason=reason, payload=st.requests or job.payload.get("requests"),
            status_code=st.answer.status if st.answer else None, response=st.answer.body if st.answer else None,
            attempts=attempts,
            attempt_history={"first_attempt_at": job.first_attempt_at.isoformat() if job.first_attempt_at else None,
                             "last_attempt_at": datetime.now(UTC).isoformat(), "attempts": attempts},
            original_job_id=job.job_id, original_queue=self.table,
        )
