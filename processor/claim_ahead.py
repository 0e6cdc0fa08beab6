"""Claim the next gateway batch while the current one is transformed: at most one claim in flight, on
a connection and a thread of its own (psycopg2 lets go of the GIL while Postgres works).

The claim is the same claim_gw the loop would have made a moment later, so batches still come in
job_id order; whatever goes wrong with the batches before it, the loop hands it back (give_back)
rather than let it overtake them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from psycopg2.extras import register_default_jsonb

from jobsdb.db import LongLivedConnection
from jobsdb.queue import GatewayJob, claim_gw, new_token, release_gw
from transformers import json_codec


class ClaimAhead:
    def __init__(self, dsn: str, owner: str, application_name: str = "sluice-processor-claim", stop=None):
        self.owner = owner
        self.db = LongLivedConnection(
            dsn, application_name, stop=stop,
            on_connect=lambda conn: register_default_jsonb(conn, loads=json_codec.loads))
        self._executor: ThreadPoolExecutor | None = None
        self._inflight: tuple[Future, int] | None = None

    def start(self, parts: Sequence[int], limit: int, lease_seconds: float) -> None:
        """Start claiming the next batch (one claim in flight at most)."""
        assert self._inflight is None, "a claim is already in flight"
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="processor-claim")
        token = new_token()
        self._inflight = (self._executor.submit(self._claim, list(parts), limit, lease_seconds, token), token)

    def take(self) -> tuple[list[GatewayJob], int] | None:
        """The claimed batch and its token, or None when no claim was started. Re-raises claim errors."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return None
        future, token = inflight
        return future.result(), token

    def settle(self) -> None:
        """Wait until the claim in flight, if any, has finished (it stays to be taken)."""
        if self._inflight is not None:
            with contextlib.suppress(Exception):
                self._inflight[0].result()

    def give_back(self) -> None:
        """Release the batch claimed ahead, if any, unused: the claim does not count as an attempt
        (fenced by its token; errors are ignored: the claim then expires with its lease)."""
        with contextlib.suppress(Exception):
            claimed = self.take()
            if claimed and claimed[0]:
                jobs, token = claimed
                assert self._executor is not None
                self._executor.submit(self._release, [j.job_id for j in jobs], token).result()

    def close(self) -> None:
        self.give_back()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        self.db.close()

    # -- on the worker thread ---------------------------------------------------------------------

    def _claim(self, parts: list[int], limit: int, lease_seconds: float, token: int) -> list[GatewayJob]:
        try:
            return claim_gw(self.db.get(), parts, limit, lease_seconds, token, self.owner)
        except BaseException:
            self.db.drop()
            raise

    def _release(self, job_ids: list[int], token: int) -> None:
        release_gw(self.db.get(), job_ids, token, count_attempt=False)
