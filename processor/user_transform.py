"""The user-transformation stage: one destination's events through its JavaScript transformation,
in chunks (one V8 call per chunk, never one per event), with RudderStack's metadata(event).

A chunk that times out or fails to compile fails alone; a throwing event, or one that passes the
memory limit, fails alone. Contexts belong to the source's workspace.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from config.workspace import Destination, Source
from jobsdb.queue import GatewayJob
from transformers.user_js import UserTransformer

log = logging.getLogger("sluice.processor.user_js")
MAX_LOG_LINE = 2000  # characters of one user log() line that reach our logs


@dataclass
class Transformed:
    """What the transformation made of one input event."""

    outputs: list[dict] = field(default_factory=list)
    error: str | None = None


def metadata_for(job: GatewayJob, event: dict, source: Source, dest: Destination) -> dict:
    """What metadata(event) answers in the transformation, with RudderStack's field names."""
    t = dest.transformation
    return {
        "sourceId": source.id,
        "sourceName": source.name,
        "sourceCategory": source.category,
        "workspaceId": source.workspace_id,
        "destinationId": dest.id,
        "destinationType": dest.type,
        "destinationName": dest.name,
        "messageId": event.get("messageId"),
        "jobId": job.job_id,
        "rudderId": job.user_key,
        "receivedAt": event.get("receivedAt"),
        "eventName": event.get("event"),
        "eventType": event.get("type"),
        "transformationId": t.id if t else None,
        "transformationVersionId": t.version_id if t else None,
    }


def assign_message_ids(outputs: list[dict], original: object) -> list[dict]:
    """Fan-out outputs get distinct messageIds: the first keeps the original, the others get -1, -2…
    An id the transformation set itself (different from the original) is kept."""
    if original is None:
        return outputs
    for n, out in enumerate(outputs):
        mid = out.get("messageId")
        if mid is None or mid == original:
            out["messageId"] = original if n == 0 else f"{original}-{n}"
    return outputs


def run_transformation(
    runner: UserTransformer,
    jobs: Sequence[GatewayJob],
    source: Source,
    dest: Destination,
    chunk_size: int,
) -> list[Transformed]:
    """Transform `jobs`' events for `dest`; one result per job, in order."""
    t = dest.transformation
    assert t is not None
    chunks = [jobs[start:start + chunk_size] for start in range(0, len(jobs), chunk_size)]
    # All chunks in one go: the worker runs one while the next travels and the last is decoded.
    batches = runner.run_chunks(
        source.workspace_id, t.version_id, t.code,
        [([j.payload for j in chunk], [metadata_for(j, j.payload, source, dest) for j in chunk]) for chunk in chunks],
    )
    results: list[Transformed] = []
    for chunk, batch in zip(chunks, batches, strict=True):
        for line in batch.logs:
            log.info(line[:MAX_LOG_LINE], extra={"transformation_id": t.id, "version_id": t.version_id,
                                                 "destination_id": dest.id, "source_id": source.id})
        if batch.batch_error is not None:
            log.warning("transformation failed for a whole chunk",
                        extra={"transformation_id": t.id, "version_id": t.version_id, "destination_id": dest.id,
                               "events": len(chunk), "reason": batch.batch_error[:500]})
        for job, item in zip(chunk, batch.results, strict=True):
            outputs = [o for o in item.outputs if isinstance(o, dict)]
            results.append(Transformed(assign_message_ids(outputs, job.payload.get("messageId")), item.error))
    return results
