"""messageId dedup shared by every processor process: keys live in Postgres (dedup_keys) and are
written in the same transaction as the batch's output, so a key is remembered exactly when its
event's jobs are committed. SDK retries of one message therefore fan out once."""

from __future__ import annotations

from collections.abc import Sequence

from jobsdb.processing import dedup_new_keys
from processor.pipeline import JobOutput


def keep_new(cur, outputs: Sequence[JobOutput], window_seconds: float | None) -> tuple[list[JobOutput],
                                                                                        list[JobOutput]]:
    """Split a batch's job outputs into (kept, duplicates), recording the kept keys.

    Within the batch the first job with a key wins; across batches and processes the key table
    decides. `window_seconds=None` turns dedup off. Jobs without a messageId are always kept."""
    if window_seconds is None:
        return list(outputs), []
    first: dict[tuple[str, str], int] = {}
    for i, out in enumerate(outputs):
        if out.dedup_key is not None and out.dedup_key not in first:
            first[out.dedup_key] = i
    new = dedup_new_keys(cur, sorted(first), window_seconds)
    kept, duplicates = [], []
    for i, out in enumerate(outputs):
        key = out.dedup_key
        if key is None or (key in new and first[key] == i):
            kept.append(out)
        else:
            duplicates.append(out)
    return kept, duplicates
