"""The long run, made short: `sluice up` with tiny datasets (1,000 jobs), no retention, two processors
and two routers, and 30,000 events to a destination, with bad traffic alongside. Every event arrives once,
in per-user order; no process exits; finished datasets are dropped as the run goes, and the tables that
record rejections and dedup keys stay bounded. Dataset rotation, retention and lease handling all happen
dozens of times here, with two of every process racing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections import defaultdict

import psutil
import psycopg2
import requests

from jobsdb import datasets
from tests.support import workspace as ws
from tests.support.fake_destination import FakeDestination
from tests.support.procs import ROOT, free_port, wait_for

EVENTS = 30_000
USERS = 60
BATCH = 100
SIZE = 1000


def sql(dsn, statement, args=None):
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(statement, args)
        rows = cur.fetchall() if cur.description else []
        conn.commit()
    return rows


def small_datasets(dsn) -> None:
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        with conn.cursor() as cur:
            cur.execute("UPDATE sluice_settings SET value = %s WHERE key = 'jobs_per_dataset'", (str(SIZE),))
            for table in ("gw_jobs", "rt_jobs", "batch_rt_jobs"):
                for n in datasets.existing(cur, table):
                    cur.execute(f"DROP TABLE {table}_{n}")
        conn.commit()
        for table in ("gw_jobs", "rt_jobs", "batch_rt_jobs"):
            datasets.ensure(conn, table)


def dataset_counts(dsn) -> dict[str, int]:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        return {t: len(datasets.existing(cur, t)) for t in ("gw_jobs", "rt_jobs", "batch_rt_jobs")}


def oldest_dataset(dsn, table: str) -> int:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        return min(datasets.existing(cur, table))


def send_traffic(url: str, errors: list, clients: int = 4) -> None:
    """30,000 good events in batches of 100 from four clients, with garbage in between: invalid events in
    good batches, unknown write keys, broken JSON. Each client sends its own users' events (a user's
    events come from one client, as from one device), in order, each batch after the previous one's 200;
    each event carries its per-user sequence number."""

    def client(k: int) -> None:
        users = [f"user-{u}" for u in range(USERS) if u % clients == k]
        seqs = defaultdict(int)
        session = requests.Session()
        try:
            for b in range(EVENTS // BATCH // clients):
                batch = []
                for i in range(BATCH):
                    user = users[(b * BATCH + i) % len(users)]
                    batch.append({"type": "track", "event": "Step", "userId": user,
                                  "messageId": f"m-{k}-{b}-{i}", "properties": {"seq": seqs[user]}})
                    seqs[user] += 1
                if b % 10 == 0:
                    batch.append({"type": "track", "userId": "nobody"})  # no event name: rejected alone
                r = session.post(url + "/v1/batch", json={"batch": batch}, auth=(ws.WEB_KEY, ""), timeout=60)
                if r.status_code != 200:
                    errors.append(f"batch {b}: {r.status_code} {r.text[:200]}")
                if b % 7 == 0:
                    session.post(url + "/v1/track", data=b"{not json", auth=(ws.WEB_KEY, ""), timeout=10)
                    session.post(url + "/v1/track?writeKey=wrong-key", json={"userId": "x", "event": "y"}, timeout=10)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)


def expected_ids(clients: int = 4) -> list[str]:
    return sorted(f"m-{k}-{b}-{i}" for k in range(clients) for b in range(EVENTS // BATCH // clients)
                  for i in range(BATCH))


def explain(dsn, user: str) -> str:
    """Where a user's events stand in each queue (for a failure message)."""
    gw = sql(dsn, "SELECT job_id, part, (payload->'properties'->>'seq')::int, attempts FROM gw_jobs "
                  "WHERE user_key = %s ORDER BY job_id", (user,))
    rt = sql(dsn, "SELECT job_id, part, (payload->'event'->'properties'->>'seq')::int, state, attempts "
                  "FROM rt_jobs WHERE user_key = %s ORDER BY job_id", (user,))
    return f"gw (job_id, part, seq, attempts): {gw}\nrt (job_id, part, seq, state, attempts): {rt}"


def test_long_run_through_many_datasets(dsn, tmp_path):
    small_datasets(dsn)
    port = free_port()
    with FakeDestination() as fake:
        config = ws.write(tmp_path / "workspace-config.json",
                          ws.basic_workspace([ws.webhook("dst-hook", fake.url + "/hook")]))
        env = {**os.environ, "SLUICE_DATABASE_URL": dsn, "SLUICE_PORT": str(port), "SLUICE_HOST": "127.0.0.1",
               "SLUICE_CONFIG": str(config), "SLUICE_DATA_DIR": str(tmp_path / "data"),
               "SLUICE_GATEWAY_WORKERS": "1", "SLUICE_PROCESSORS": "2", "SLUICE_ROUTERS": "2",
               "SLUICE_RETENTION_HOURS": "0", "SLUICE_JANITOR_INTERVAL_SECONDS": "1",
               "SLUICE_DEDUP_WINDOW_SECONDS": "3", "SLUICE_GW_REJECTED_RETENTION_HOURS": "0.001",
               "SLUICE_LEASE_SECONDS": "10", "SLUICE_ROUTER_TIMEOUT": "5", "SLUICE_ROUTER_WORKERS": "16",
               "SLUICE_JOBS_PER_DATASET": str(SIZE)}
        log = open(tmp_path / "up.log", "w")  # noqa: SIM115 - closed below
        up = subprocess.Popen([sys.executable, "-m", "ops.cli", "up"], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda: requests.get(url + "/health", timeout=2).status_code == 200, 60, what="sluice up")
            children = {p.pid: " ".join(p.cmdline()[-1:]) for p in psutil.Process(up.pid).children()}
            assert sorted(children.values()).count("processor") == 2, children
            assert sorted(children.values()).count("router") == 2, children

            samples: list[tuple[int, int, int, int]] = []
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.wait(1.0):
                    with contextlib.suppress(Exception):
                        rejected, keys = sql(dsn, "SELECT (SELECT count(*) FROM gw_rejected), "
                                                  "(SELECT count(*) FROM dedup_keys)")[0]
                        samples.append((rejected, keys, oldest_dataset(dsn, "rt_jobs"), len(fake.delivered)))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            errors: list[str] = []
            send_traffic(url, errors)
            assert errors == []

            def delivered() -> int:
                assert up.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
                return len(fake.delivered) >= EVENTS

            wait_for(delivered, 240, interval=0.5, what="every event delivered")
            got = [r.json() for r in list(fake.delivered)]
            ids = [e["messageId"] for e in got]
            assert sorted(set(ids)) == expected_ids(), "every event, none lost"
            assert len(ids) == EVENTS, f"{len(ids) - len(set(ids))} events were delivered twice"
            per_user = defaultdict(list)
            for e in got:
                per_user[e["userId"]].append(e["properties"]["seq"])
            for user, seqs in per_user.items():
                assert seqs == sorted(seqs), f"{user}: delivered out of order\n{seqs}\n{explain(dsn, user)}"

            # Finished datasets go while the run goes on; at the end only the one being written and the
            # two kept ready remain in each queue.
            wait_for(lambda: max(dataset_counts(dsn).values()) <= 3, 60, what="finished datasets dropped")
            # The records of rejections and the dedup keys leave with their retention.
            wait_for(lambda: sql(dsn, "SELECT (SELECT count(*) FROM gw_rejected) + "
                                      "(SELECT count(*) FROM dedup_keys)")[0][0] == 0, 60,
                     what="rejections and dedup keys past their retention deleted")
            sampling.set()
            sampler.join(5)
            assert samples, "the sampler saw the tables"
            assert max(s[1] for s in samples) < EVENTS, "dedup keys expired during the run, not only after"
            assert any(oldest > 0 and n < EVENTS for _, _, oldest, n in samples), \
                "delivery datasets were dropped while delivery went on, not only at the end"

            now = {p.pid for p in psutil.Process(up.pid).children()}
            assert set(children) <= now, "no process exited or was restarted"
            text = (tmp_path / "up.log").read_text()
            assert "exited, restarting" not in text
            assert '"level": "error"' not in text, [x for x in text.splitlines() if '"level": "error"' in x][:5]
            sources = sql(dsn, "SELECT count(*) FROM failed_jobs")[0][0]
            assert sources == 0
        finally:
            up.send_signal(signal.SIGTERM)
            code = up.wait(90)
            log.close()
        assert code == 0
        lines = [json.loads(x) for x in (tmp_path / "up.log").read_text().splitlines() if x.startswith("{")]
        assert any(x.get("msg") == "housekeeping" and x.get("dropped") for x in lines), "the janitor dropped datasets"
