"""The long run, made short: `sluice up` with tiny datasets (1,000 jobs), no retention, two processors
and two routers, and 30,000 events to a destination, with bad traffic alongside. Every event arrives once,
in per-user order; no process exits; finished datasets are dropped as the run goes, and the tables that
record rejections and dedup keys stay bounded. Dataset rotation, retention and lease handling all happen
dozens of times here, with two of every process racing. An admin page is open all along (the overview
reloaded every second, the live tail streaming); its service is killed with SIGKILL mid-run and started
again, and neither the pipeline nor the page may notice more than that gap."""

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
from tests.support.admin_client import OpenPage
from tests.support.fake_destination import FakeDestination
from tests.support.procs import ROOT, SluiceProcess, free_port, wait_for

EVENTS = 30_000
USERS = 60
BATCH = 100
SIZE = 1000
ADMIN_TOKEN = "long-run-admin-token-0123456789"


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
            admin_url, admin_env = f"http://127.0.0.1:{free_port()}", {
                "SLUICE_DATABASE_URL": dsn, "SLUICE_CONFIG": str(config), "SLUICE_ADMIN_TOKEN": ADMIN_TOKEN,
                "SLUICE_ADMIN_HOST": "127.0.0.1", "SLUICE_LOG_LEVEL": "INFO"}
            admin_env["SLUICE_ADMIN_PORT"] = admin_url.rsplit(":", 1)[1]
            admins = [SluiceProcess("admin", admin_env, tmp_path)]
            page = OpenPage(admin_url, ADMIN_TOKEN, overview_every=1.0)
            wait_for(lambda: _answers(page), 30, what="sluice admin")
            page.start()
            after_restart: dict[str, int] = {}

            def crash_admin() -> None:
                """SIGKILL the admin service a third of the way in, start another, and wait for the page
                to be back (live tail and overview) before counting its errors again."""
                wait_for(lambda: len(fake.delivered) >= EVENTS // 3, 240, interval=0.2, what="a third delivered")
                items, overviews = page.items, page.overviews
                assert items > 0, "the live tail streamed before the crash"
                before = page.stats()["live"]
                assert before["errors"] == 0 and before["polls"] > 0, before  # through dataset drops
                admins[0].kill9()
                first_log = admins[0].output()
                assert '"level": "error"' not in first_log and "Traceback" not in first_log, first_log[-3000:]
                admins.append(SluiceProcess("admin", admin_env, tmp_path))
                wait_for(lambda: page.items > items and page.overviews > overviews, 60, interval=0.2,
                         what="the page back after the admin's restart")
                after_restart.update(items=page.items, errors=len(page.errors))

            crash_failures: list[BaseException] = []

            def crash_admin_reported() -> None:
                try:
                    crash_admin()
                except BaseException as exc:  # noqa: BLE001 - re-raised by the test below
                    crash_failures.append(exc)

            crasher = threading.Thread(target=crash_admin_reported, daemon=True)
            crasher.start()
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
            crasher.join(60)
            if crash_failures:
                raise crash_failures[0]
            assert after_restart, "the admin was killed and came back"

            # The page kept working through dataset rotation and drops, with nothing to report.
            wait_for(lambda: page.items > after_restart["items"] + 100, 30, what="the live tail after the restart")
            stats = page.stats()
            page.close()
            assert page.errors[after_restart["errors"]:] == []
            assert stats["live"]["errors"] == 0, stats
            overview = page.session.get(admin_url + "/admin/api/overview", timeout=30).json()
            [hook] = [d for d in overview["destinations"] if d["id"] == "dst-hook"]
            assert 0 < hook["delivered_1h"] <= EVENTS, hook  # what the kept datasets and its own reads saw
            assert hook["failed_1h"] == 0 and hook["retrying"] == 0, hook
            assert admins[-1].alive()
            admin_log = admins[-1].output()
            assert '"level": "error"' not in admin_log and "Traceback" not in admin_log, admin_log[-3000:]
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
            with contextlib.suppress(NameError):
                page.close()
                for admin in admins:
                    admin.stop()
            up.send_signal(signal.SIGTERM)
            code = up.wait(90)
            log.close()
        assert code == 0
        lines = [json.loads(x) for x in (tmp_path / "up.log").read_text().splitlines() if x.startswith("{")]
        assert any(x.get("msg") == "housekeeping" and x.get("dropped") for x in lines), "the janitor dropped datasets"


def _answers(page: OpenPage) -> bool:
    with contextlib.suppress(requests.RequestException, ValueError):
        return "statements" in page.stats()
    return False
