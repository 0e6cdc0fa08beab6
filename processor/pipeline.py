"""One claimed batch of gateway jobs in, everything the processor will write out: delivery rows for
the router and batch-router queues, dead letters, filtered counts. No database I/O here.

Per event, in rudder-server's order: source lookup → per destination the pre-transform rules
(enabled, processor enabled, `integrations`) → the destination's user transformation → per output
the post-transform rules (supported message types, allow / deny list) → the destination transformer
(none for warehouses: the batch router loads the event itself).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from config.workspace import Destination, Source, Workspace
from jobsdb import storable
from jobsdb.processing import FailedRow
from jobsdb.queue import GatewayJob, partition_of
from processor import fanout
from processor.user_transform import Transformed, run_transformation
from transformers import destinations, json_codec
from transformers.errors import TransformError
from transformers.user_js import UserTransformer

log = logging.getLogger("sluice.processor")

USER_TRANSFORM_STAGE = "user_transform"
DEST_TRANSFORM_STAGE = "dest_transform"
WAREHOUSE_STAGE = "warehouse"
DESTINATION_OFF_STAGE = "destination_config"

DestTransform = Callable[[str, dict, dict, datetime.datetime], list]
# A delivery job row: (part, destination_id, source_id, user_key, message_id, payload as JSON text).
DeliveryJSON = tuple[int, str, str, str, "str | None", str]
_dumps = json_codec.dumps


# Key the replay tool puts on a gateway job: {"destination_id", "failed_job_id"}.
REPLAY_KEY = "_sluice_replay"


@dataclass
class JobOutput:
    """Everything one gateway job produced, kept per job so a duplicate can be dropped as a whole."""

    job: GatewayJob
    dedup_key: tuple[str, str] | None
    rt: list[DeliveryJSON] = field(default_factory=list)
    batch_rt: list[DeliveryJSON] = field(default_factory=list)
    failed: list[FailedRow] = field(default_factory=list)
    filtered: list[tuple[str, str, str]] = field(default_factory=list)  # (source_id, destination_id, rule)
    event_json: str | None = None  # the untransformed event as JSON, once encoded


@dataclass
class _Group:
    source: Source
    dest: Destination
    rules: fanout.DestinationRules
    indexes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The payload's constant tail for this destination, encoded once.
        self.payload_tail = (',"dest_type":' + _dumps(self.dest.type) + ',"source_id":' + _dumps(self.source.id)
                             + ',"destination_id":' + _dumps(self.dest.id))


class Pipeline:
    def __init__(
        self,
        user_js: UserTransformer,
        router_partitions: int,
        transform_chunk: int = 200,
        dest_transform: DestTransform = destinations.transform,
        max_output_bytes: int = 1024 * 1024,
    ):
        self.user_js = user_js
        self.router_partitions = router_partitions
        self.transform_chunk = transform_chunk
        self.dest_transform = dest_transform
        self.max_output_bytes = max_output_bytes
        self._rules: tuple[str, dict[tuple[str, str], fanout.DestinationRules]] = ("", {})

    def _rules_for(self, workspace: Workspace, source: Source, dest: Destination) -> fanout.DestinationRules:
        fingerprint, cache = self._rules
        if fingerprint != workspace.fingerprint:
            cache = {}
            self._rules = (workspace.fingerprint, cache)
        key = (source.id, dest.id)
        rules = cache.get(key)
        if rules is None:
            rules = cache[key] = fanout.DestinationRules(dest)
        return rules

    def process(self, jobs: Sequence[GatewayJob], workspace: Workspace,
                now: datetime.datetime | None = None) -> list[JobOutput]:
        now = now or datetime.datetime.now(datetime.UTC)
        outputs: list[JobOutput] = []
        groups: dict[tuple[str, str], _Group] = {}
        for i, job in enumerate(jobs):
            event = job.payload
            target = None
            if isinstance(event, dict) and REPLAY_KEY in event:
                # A replayed dead letter: it goes to the one destination that failed it, past dedup.
                replay = event[REPLAY_KEY]
                target = replay.get("destination_id") if isinstance(replay, dict) else None
                event = job.payload = {k: v for k, v in event.items() if k != REPLAY_KEY}
            mid = event.get("messageId") if isinstance(event, dict) else None
            out = JobOutput(job, (job.source_id, str(mid)) if mid not in (None, "") and target is None else None)
            outputs.append(out)
            source = workspace.source_by_id(job.source_id)
            if source is None:
                out.filtered.append((job.source_id, "", fanout.SOURCE_UNKNOWN))
                continue
            if not source.enabled:
                out.filtered.append((job.source_id, "", fanout.SOURCE_DISABLED))
                continue
            if not isinstance(event, dict):
                continue  # the gateway only stores objects
            integrations = fanout.integrations_of(event)
            for dest in source.destinations:
                if target is not None and dest.id != target:
                    continue
                rule = fanout.before_transform(event, integrations, dest)
                if rule is not None:
                    out.filtered.append((source.id, dest.id, rule))
                    continue
                group = groups.get((source.id, dest.id))
                if group is None:
                    group = groups[(source.id, dest.id)] = _Group(source, dest, self._rules_for(workspace, source, dest))
                group.indexes.append(i)

        for group in groups.values():
            self._deliver_group(group, jobs, outputs, now)
        return outputs

    def _deliver_group(self, group: _Group, jobs: Sequence[GatewayJob], outputs: list[JobOutput],
                       now: datetime.datetime) -> None:
        source, dest = group.source, group.dest
        if dest.transformation is not None:
            transformed = run_transformation(self.user_js, [jobs[i] for i in group.indexes], source, dest,
                                             self.transform_chunk)
        else:
            transformed = [Transformed([jobs[i].payload]) for i in group.indexes]
        untouched = dest.transformation is None
        for i, result in zip(group.indexes, transformed, strict=True):
            job, out = jobs[i], outputs[i]
            if result.error is not None:
                out.failed.append(self._failed(USER_TRANSFORM_STAGE, job, dest, job.payload, result.error,
                                               job.payload))
            elif not result.outputs:
                out.filtered.append((source.id, dest.id, fanout.USER_TRANSFORM))
            for event in result.outputs:
                rule = group.rules.after_transform(event)
                if rule is not None:
                    out.filtered.append((source.id, dest.id, rule))
                    continue
                self._deliver(job, out, group, event, now, untouched)

    def _deliver(self, job: GatewayJob, out: JobOutput, group: _Group, event: dict, now: datetime.datetime,
                 untouched: bool) -> None:
        source, dest = group.source, group.dest
        requests: list = []
        if dest.problems:
            # The destination is off (bad config, unsupported type): kept, with the reason, for a replay
            # once it is fixed, rather than sent to fail or queued for a loader that does not exist.
            stage = WAREHOUSE_STAGE if dest.is_warehouse else DESTINATION_OFF_STAGE
            out.failed.append(self._failed(stage, job, dest, event, dest.off_reason or "", job.payload))
            return
        if not dest.is_warehouse:
            try:
                requests = self.dest_transform(dest.type, event, dest.config, now)
            except TransformError as exc:
                out.failed.append(self._failed(DEST_TRANSFORM_STAGE, job, dest, event, exc.reason, job.payload,
                                               status=exc.status))
                return
            except Exception as exc:  # noqa: BLE001 - a transformer bug fails the event, not the processor
                log.exception("destination transformer crashed", extra={"destination_id": dest.id,
                                                                       "dest_type": dest.type})
                out.failed.append(self._failed(DEST_TRANSFORM_STAGE, job, dest, event,
                                               f"transformer error: {type(exc).__name__}: {exc}", job.payload))
                return
        user_key = _user_key(event, job.user_key)
        received_at = event.get("receivedAt") or job.payload.get("receivedAt") or job.received_at.isoformat()
        try:
            if untouched:
                # The gateway stored this event, so Postgres takes it as it is. Every destination without a
                # transformation stores the same event: encode it once per job.
                if out.event_json is None:
                    out.event_json = _dumps(event)
                event_json = out.event_json
            else:
                # What a transformation returns is checked like the gateway checks its input, per event.
                event_json = storable.json_text(event, self.max_output_bytes)
            requests_json = storable.json_text(requests)
        except storable.Unstorable as exc:
            stage = DEST_TRANSFORM_STAGE if untouched else USER_TRANSFORM_STAGE
            what = "the destination payload" if untouched else "the transformation's output"
            out.failed.append(self._failed(stage, job, dest, job.payload, f"{what} cannot be stored: {exc}",
                                           job.payload))
            return
        payload = ('{"event":' + event_json + ',"requests":' + requests_json + group.payload_tail
                   + ',"gw_job_id":' + str(job.job_id) + ',"received_at":' + _dumps(received_at) + "}")
        message_id = _text(event.get("messageId"))
        if not untouched:
            user_key, message_id = storable.text(user_key, 1000), storable.text(message_id, 1000)
        row = (partition_of(user_key, self.router_partitions), dest.id, source.id, user_key, message_id, payload)
        (out.batch_rt if dest.is_warehouse else out.rt).append(row)

    @staticmethod
    def _failed(stage: str, job: GatewayJob, dest: Destination, event: dict, reason: str, original: dict,
                status: int | None = None) -> FailedRow:
        return FailedRow(
            stage=stage,
            source_id=job.source_id,
            destination_id=dest.id,
            destination_type=dest.type,
            user_key=_user_key(event, job.user_key),
            message_id=_text(event.get("messageId")),
            event=original,
            payload={"event": event} if event is not original else None,
            reason=reason,
            status_code=status,
            attempts=1,
            attempt_history=[{"at": datetime.datetime.now(datetime.UTC).isoformat(), "stage": stage,
                              "reason": reason[:1000]}],
            original_job_id=job.job_id,
            original_queue="gw_jobs",
        )


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _user_key(event: dict, fallback: str) -> str:
    for key in ("userId", "anonymousId"):
        value = event.get(key)
        if value not in (None, ""):
            return str(value)
    return fallback
