"""The POSTGRES warehouse destination end to end: real gateway, processor and router processes, and a
real second database on the test server as the warehouse. Tables and columns are checked against lists
written from RudderStack's warehouse documentation (reference/warehouse-schema.md), not from our output."""

from __future__ import annotations

import contextlib
import urllib.parse
import uuid
from pathlib import Path

import psycopg2
import pytest
import requests

from tests.conftest import start_gateway
from tests.ops.conftest import sluice, sluice_json
from tests.support import workspace as ws
from tests.support.fake_destination import FakeDestination
from tests.support.procs import SluiceProcess, free_port, wait_for

COMMON = {"id", "anonymous_id", "user_id", "sent_at", "timestamp", "received_at", "original_timestamp",
          "channel", "context_ip", "context_request_ip", "context_source_id", "context_source_type",
          "context_destination_id", "context_destination_type", "uuid_ts"}


class Warehouse:
    """A second database on the test server, standing in for the user's warehouse."""

    def __init__(self, admin_dsn: str):
        self.admin_dsn = admin_dsn
        self.name = f"wh_{uuid.uuid4().hex[:10]}"
        parts = urllib.parse.urlsplit(admin_dsn)
        self.host, self.port = parts.hostname, parts.port
        self.user, self.password = parts.username, parts.password or ""
        self.dsn = urllib.parse.urlunsplit(parts._replace(path="/" + self.name))

    def create(self) -> Warehouse:
        with contextlib.closing(psycopg2.connect(self.admin_dsn)) as conn:
            conn.autocommit = True
            conn.cursor().execute(f'CREATE DATABASE "{self.name}"')
        return self

    def drop(self) -> None:
        with contextlib.closing(psycopg2.connect(self.admin_dsn)) as conn:
            conn.autocommit = True
            conn.cursor().execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def config(self, **extra) -> dict:
        return {"host": self.host, "port": str(self.port), "database": self.name, "user": self.user,
                "password": self.password, "sslMode": "disable", **extra}

    def sql(self, statement: str, args=None) -> list[tuple]:
        with contextlib.closing(psycopg2.connect(self.dsn)) as conn, conn.cursor() as cur:
            cur.execute(statement, args)
            rows = cur.fetchall() if cur.description else []
            conn.commit()
        return rows

    def tables(self, schema: str) -> set[str]:
        return {r[0] for r in self.sql("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                                       (schema,))}

    def columns(self, schema: str, table: str) -> dict[str, str]:
        return dict(self.sql("SELECT column_name, data_type FROM information_schema.columns "
                             "WHERE table_schema = %s AND table_name = %s", (schema, table)))


@pytest.fixture
def warehouse(pg_server):
    wh = Warehouse(pg_server.admin_dsn).create()
    yield wh
    with contextlib.suppress(Exception):
        wh.drop()


def postgres_destination(dest_id: str, config: dict) -> dict:
    return ws.destination(dest_id, "POSTGRES", "PostgreSQL", config)


class Pipeline:
    def __init__(self, dsn: str, tmp: Path, workspace: dict, router: bool = True, **settings):
        self.dsn, self.tmp = dsn, tmp
        self.config = ws.write(tmp / "workspace-config.json", workspace)
        self.settings = {"warehouse_sync_seconds": 0.5, "lease_seconds": 6, "router_timeout": 2,
                         "router_min_backoff": 0.2, "router_max_backoff": 0.5, **settings}
        self.gateway = start_gateway(dsn, self.config, tmp)
        self.processor = self.start("processor")
        self.router = self.start("router") if router else None

    def start(self, role: str, **extra) -> SluiceProcess:
        env = {"SLUICE_DATABASE_URL": self.dsn, "SLUICE_CONFIG": str(self.config), "SLUICE_CONFIG_POLL_INTERVAL": "0.2",
               "SLUICE_PROCESSOR_IDLE_SLEEP": "0.02", "SLUICE_LOG_LEVEL": "INFO"}
        env.update({f"SLUICE_{k.upper()}": str(v) for k, v in {**self.settings, **extra}.items()})
        return SluiceProcess(role, env, self.tmp)

    def send(self, events: list[dict], write_key: str = ws.WEB_KEY) -> None:
        r = self.gateway.post("/v1/batch", {"batch": events}, write_key=write_key)
        assert r.status_code == 200, r.text

    def settled(self) -> bool:
        for p in (self.processor, self.router, self.gateway.proc):
            if p is None:
                continue
            assert p.alive(), f"{p.role} exited:\n{p.output()[-3000:]}"
        with contextlib.closing(psycopg2.connect(self.dsn)) as conn, conn.cursor() as cur:
            cur.execute("SELECT (SELECT count(*) FROM gw_jobs WHERE state = 0) + "
                        "(SELECT count(*) FROM batch_rt_jobs WHERE state = 0) + "
                        "(SELECT count(*) FROM rt_jobs WHERE state = 0)")
            return cur.fetchone()[0] == 0

    def queue(self, statement: str, args=None) -> list[tuple]:
        with contextlib.closing(psycopg2.connect(self.dsn)) as conn, conn.cursor() as cur:
            cur.execute(statement, args)
            rows = cur.fetchall() if cur.description else []
            conn.commit()
        return rows

    def stop(self) -> None:
        for p in (self.router, self.processor, self.gateway.proc):
            if p is not None:
                p.stop()


@pytest.fixture
def pipeline_factory(dsn, tmp_path):
    made: list[Pipeline] = []

    def make(workspace: dict, router: bool = True, **settings) -> Pipeline:
        p = Pipeline(dsn, tmp_path, workspace, router, **settings)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


def ev(kind: str, n: int, user: str = "u1", **fields) -> dict:
    e = {"type": kind, "userId": user, "anonymousId": f"anon-{user}", "messageId": f"{kind}-{user}-{n}", "channel": "server",
         "context": {"library": {"name": "analytics-python", "version": "2.4.0"}, "ip": "10.1.2.3"}, **fields}
    return e


def test_every_message_type_lands_in_rudderstacks_tables(pipeline_factory, warehouse):
    dest = postgres_destination("dst-pg", warehouse.config(namespace="analytics", jsonPaths="track.properties.shipping"))
    p = pipeline_factory(ws.basic_workspace([dest]))
    p.send([
        ev("track", 1, event="Order Completed", properties={"revenue": 12.5, "items": 3, "coupon": "X1",
                                                           "address": {"city": "Lyon"}, "tags": ["a", "b"],
                                                           "shipping": {"method": "post", "days": 2}}),
        ev("identify", 2, traits={"email": "a@example.com", "plan": "pro", "userId": "legacy"}),
        ev("page", 3, name="Home", properties={"path": "/"}),
        ev("screen", 4, name="Main", properties={"orientation": "portrait"}),
        ev("group", 5, groupId="g1", traits={"employees": 40}),
        ev("alias", 6, previousId="old-id"),
    ])
    wait_for(p.settled, 60, what="the events to be loaded")
    assert warehouse.tables("analytics") >= {"tracks", "order_completed", "identifies", "users", "pages", "screens",
                                             "groups", "aliases"}
    tracks = warehouse.columns("analytics", "tracks")
    assert COMMON | {"event", "event_text", "context_library_name", "context_library_version"} <= set(tracks)
    assert "revenue" not in tracks, "tracks holds no properties"
    order = warehouse.columns("analytics", "order_completed")
    assert COMMON | {"event", "event_text", "revenue", "items", "coupon", "address_city", "tags"} <= set(order)
    assert order["revenue"] == "numeric" and order["items"] == "bigint" and order["tags"] == "text"
    assert order["received_at"] == "timestamp with time zone"
    assert order["shipping"] == "jsonb" and "shipping_method" not in order, "jsonPaths keeps the subtree whole"
    assert warehouse.sql("SELECT shipping FROM analytics.order_completed") == [({"method": "post", "days": 2},)]
    row = warehouse.sql("SELECT event, event_text, revenue, items, address_city, tags, context_ip, user_id "
                        "FROM analytics.order_completed")
    assert row == [("order_completed", "Order Completed", 12.5, 3, "Lyon", '["a","b"]', "10.1.2.3", "u1")]
    identifies = warehouse.columns("analytics", "identifies")
    assert COMMON | {"email", "plan", "_user_id"} <= set(identifies)
    assert warehouse.sql("SELECT id, email, plan FROM analytics.users") == [("u1", "a@example.com", "pro")]
    assert {"name", "path"} <= set(warehouse.columns("analytics", "pages"))
    assert {"name", "orientation"} <= set(warehouse.columns("analytics", "screens"))
    assert {"group_id", "employees"} <= set(warehouse.columns("analytics", "groups"))
    assert {"previous_id"} <= set(warehouse.columns("analytics", "aliases"))
    # Bookkeeping for operators.
    [(rows, events, last_success)] = p.queue("SELECT rows_loaded, events_loaded, last_success_at FROM "
                                             "warehouse_syncs WHERE destination_id = 'dst-pg'")
    assert events == 6 and rows >= 8 and last_success is not None
    assert 'sluice_warehouse_failing{destination_id="dst-pg"} 0.0' in p.gateway.get("/metrics").text
    assert 'sluice_warehouse_pending{destination_id="dst-pg"} 0.0' in p.gateway.get("/metrics").text


def test_users_merge_and_schema_evolution_across_loads(pipeline_factory, warehouse):
    dest = postgres_destination("dst-pg", warehouse.config(namespace="evo"))
    p = pipeline_factory(ws.basic_workspace([dest]))
    p.send([ev("identify", 1, traits={"nickname": "x", "visits": 1, "city": "Lyon"}),
            ev("track", 2, event="Scored", properties={"score": 5, "ratio": 1.5, "flag": True})])
    wait_for(p.settled, 60, what="the first load")
    p.send([ev("identify", 3, traits={"visits": 2, "city": None, "tier": "gold"}),
            ev("track", 4, event="Scored", properties={"score": 7.9, "ratio": 2, "flag": "yes"})])
    wait_for(p.settled, 60, what="the second load")
    # users: one row, each column its latest non-null value across both loads.
    assert warehouse.sql("SELECT id, nickname, visits, city, tier FROM evo.users") == [("u1", "x", 2, "Lyon", "gold")]
    assert len(warehouse.sql("SELECT 1 FROM evo.identifies")) == 2
    cols = warehouse.columns("evo", "scored")
    assert (cols["score"], cols["ratio"], cols["flag"]) == ("bigint", "numeric", "boolean"), "the first types stay"
    rows = warehouse.sql("SELECT id, score, ratio, flag FROM evo.scored ORDER BY id")
    assert [(r[1], float(r[2]), r[3]) for r in rows] == [(5, 1.5, True), (7, 2.0, None)], \
        "float into int truncated, int into float kept, a string into a boolean column is NULL"
    discards = warehouse.sql("SELECT table_name, row_id, column_name, column_value, reason FROM evo.rudder_discards")
    assert len(discards) == 1
    table, row_id, column, value, reason = discards[0]
    assert (table, row_id, column, value) == ("scored", "track-u1-4", "flag", "yes") and reason
    [(discarded, rows_loaded, events_loaded)] = p.queue(
        "SELECT discards, rows_loaded, events_loaded FROM warehouse_syncs WHERE destination_id = 'dst-pg'")
    assert discarded == 1 and events_loaded == 4
    # The admin page's overview shows the same bookkeeping, and never the warehouse's password.
    port = free_port()
    admin = p.start("admin", admin_token="wh-admin-token-0123456789", admin_port=port, admin_host="127.0.0.1")
    try:
        url, bearer = f"http://127.0.0.1:{port}", {"Authorization": "Bearer wh-admin-token-0123456789"}
        wait_for(lambda: admin.alive() and _answers(url + "/admin/jobs", bearer), 30, what="sluice admin")
        overview = requests.get(url + "/admin/api/overview", headers=bearer, timeout=10).json()
        [shown] = [w for w in overview["warehouses"] if w["destination_id"] == "dst-pg"]
        assert (shown["rows_loaded"], shown["events_loaded"], shown["discards"]) == (rows_loaded, 4, 1)
        assert shown["last_success_at"] and not shown["failing"]
        page = requests.get(url + "/admin/ui/overview", headers=bearer, timeout=10).text
        assert 'id="warehouses"' in page and 'data-destination="dst-pg"' in page
        assert warehouse.password not in page or not warehouse.password
    finally:
        admin.stop()


def _answers(url: str, headers: dict) -> bool:
    with contextlib.suppress(requests.RequestException):
        return requests.get(url, headers=headers, timeout=2).status_code == 200
    return False


def test_a_batch_sent_again_after_a_crash_is_not_duplicated(pipeline_factory, warehouse):
    """kill -9 the loader after the warehouse committed and before the queue acknowledged: the next
    loader loads the same events again, and the merge on id keeps one row each."""
    dest = postgres_destination("dst-pg", warehouse.config(namespace="crash"))
    p = pipeline_factory(ws.basic_workspace([dest]), router=False)
    p.send([ev("track", n, user=f"u{n % 3}", event="Step", properties={"n": n}) for n in range(20)])
    wait_for(lambda: p.queue("SELECT count(*) FROM batch_rt_jobs WHERE state = 0")[0][0] == 20, 30,
             what="the events in the batch-router queue")
    holder = psycopg2.connect(p.dsn)
    try:
        with holder.cursor() as cur:  # the queue ack will wait for this lock, after the warehouse commit
            cur.execute("SELECT job_id FROM batch_rt_jobs WHERE state = 0 FOR UPDATE")
        p.router = first = p.start("router")
        wait_for(lambda: "step" in warehouse.tables("crash") and
                 warehouse.sql("SELECT count(*) FROM crash.step")[0][0] == 20, 60, what="the load to commit")
        wait_for(lambda: p.queue("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sluice-warehouse' "
                                 "AND wait_event_type = 'Lock'")[0][0] > 0, 30, what="the ack to wait")
        first.kill9()
    finally:
        holder.rollback()
        holder.close()
    assert p.queue("SELECT count(*) FROM batch_rt_jobs WHERE state = 0")[0][0] == 20, "nothing was acknowledged"
    p.router = p.start("router")
    wait_for(p.settled, 60, what="the second loader")
    assert warehouse.sql("SELECT count(*), count(DISTINCT id) FROM crash.step") == [(20, 20)]
    assert warehouse.sql("SELECT count(*), count(DISTINCT id) FROM crash.tracks") == [(20, 20)]


def test_a_warehouse_down_then_up_loses_nothing(pipeline_factory, pg_server):
    wh = Warehouse(pg_server.admin_dsn)  # not created yet: connections fail
    dest = postgres_destination("dst-pg", wh.config(namespace="late"))
    p = pipeline_factory(ws.basic_workspace([dest]), router_retry_overrides='{"POSTGRES": {"retry_window": 3600}}')
    try:
        p.send([ev("track", n, event="Late", properties={"n": n}) for n in range(5)])
        wait_for(lambda: p.queue("SELECT last_error FROM warehouse_syncs WHERE destination_id = 'dst-pg' "
                                 "AND last_error IS NOT NULL"), 60, what="a failed load")
        assert p.queue("SELECT count(*) FROM batch_rt_jobs WHERE state = 0")[0][0] == 5, "the jobs wait"
        wh.create()
        wait_for(p.settled, 60, what="the load once the warehouse is up")
        assert wh.sql("SELECT count(*) FROM late.late") == [(5,)]
        assert p.queue("SELECT count(*) FROM failed_jobs") == [(0,)]
    finally:
        wh.drop()


def test_a_wrong_password_fails_after_the_budget_and_other_destinations_go_on(pipeline_factory, warehouse):
    secret = "not-the-password-7f3a9"
    with FakeDestination() as fake:
        dest = postgres_destination("dst-pg", warehouse.config(namespace="nope", password=secret))
        hook = ws.webhook("dst-hook", fake.url + "/hook")
        p = pipeline_factory(ws.basic_workspace([dest, hook]),
                             router_retry_overrides='{"dst-pg": {"max_attempts": 2, "retry_window": 1}}')
        p.send([ev("track", n, event="Denied", properties={"n": n}) for n in range(4)])
        wait_for(lambda: len(fake.delivered) == 4, 30, what="the webhook to get every event meanwhile")
        wait_for(lambda: p.queue("SELECT count(*) FROM failed_jobs WHERE destination_id = 'dst-pg'")[0][0] == 4, 60,
                 what="the warehouse's jobs to reach failed_jobs")
        reasons = {r[0] for r in p.queue("SELECT reason FROM failed_jobs")}
        assert all("password authentication failed" in r for r in reasons), reasons
        for text in [*reasons, p.router.output(), p.processor.output()]:
            assert secret not in text
        [(error,)] = p.queue("SELECT last_error FROM warehouse_syncs WHERE destination_id = 'dst-pg'")
        assert "password authentication failed" in error and secret not in error
        # Operators see it — without the password — in `sluice jobs` and /metrics.
        jobs = sluice(p.dsn, "jobs")
        assert jobs.returncode == 0, jobs.stderr
        assert "dst-pg (POSTGRES)" in jobs.stdout and "last error: " in jobs.stdout and secret not in jobs.stdout
        report = sluice_json(p.dsn, "jobs")["warehouses"]
        assert report[0]["destination_id"] == "dst-pg" and report[0]["failing"] is True
        metrics = p.gateway.get("/metrics").text
        assert 'sluice_warehouse_failing{destination_id="dst-pg"} 1.0' in metrics and secret not in metrics


def test_two_sources_into_one_warehouse(dsn, pipeline_factory, warehouse):
    def src(source_id, name, key, namespace=None):
        config = warehouse.config(**({"namespace": namespace} if namespace else {}))
        s = ws.source(source_id, key, [postgres_destination(f"pg-{source_id}", config)])
        s["name"] = name
        return s

    workspace = {"workspaceId": "ws-test", "sources": [
        src("src-a", "Web App", "key-a"), src("src-b", "Backend Jobs", "key-b"),
        src("src-c", "One", "key-c", "shared"), src("src-d", "Two", "key-d", "shared")]}
    p = pipeline_factory(workspace)
    for key in ("key-a", "key-b", "key-c", "key-d"):
        p.send([ev("track", 1, user=key, event="Hello")], write_key=key)
    wait_for(p.settled, 60, what="every source loaded")
    assert warehouse.sql("SELECT user_id FROM web_app.hello") == [("key-a",)]
    assert warehouse.sql("SELECT user_id FROM backend_jobs.hello") == [("key-b",)]
    assert sorted(warehouse.sql("SELECT user_id, context_source_id FROM shared.hello")) == [
        ("key-c", "src-c"), ("key-d", "src-d")]


def test_names_built_to_break_sql_land_sanitised(pipeline_factory, warehouse):
    warehouse.sql("CREATE TABLE public.sentinel (x int)")
    namespace = 'x"; DROP TABLE public.sentinel; --'
    dest = postgres_destination("dst-pg", warehouse.config(namespace=namespace))
    p = pipeline_factory(ws.basic_workspace([dest]))
    long_name = "Very " + "Long " * 40 + "Event"
    p.send([
        ev("track", 1, event="Robert'); DROP TABLE tracks;--", properties={'a"b;--': 1, "select": 2, "2fa": True}),
        ev("track", 2, event=long_name, properties={"сity": "Lyon", "ｃｏｕｎｔ": 3}),  # Cyrillic, full-width
        ev("track", 3, event="users", properties={"x": 1}),
    ])
    wait_for(p.settled, 60, what="the hostile events to be loaded")
    schemas = {r[0] for r in warehouse.sql("SELECT schema_name FROM information_schema.schemata "
                                           "WHERE schema_name NOT LIKE 'pg\\_%' AND schema_name <> 'information_schema'")}
    assert schemas == {"public", "x_drop_table_public_sentinel"}, schemas
    assert warehouse.tables("public") == {"sentinel"}, "nothing else in the warehouse changed"
    tables = warehouse.tables("x_drop_table_public_sentinel")
    assert all(t.replace("_", "a").isalnum() and t.isascii() and len(t.encode()) <= 63 for t in tables), tables
    assert {"tracks", "robert_drop_table_tracks", "_users"} <= tables
    cols = warehouse.columns("x_drop_table_public_sentinel", "robert_drop_table_tracks")
    assert {"a_b", "_select", "_2fa"} <= set(cols)
    assert len(tables) == 4  # tracks and the three event tables, nothing else


def test_two_routers_load_one_warehouse_without_racing_on_ddl(pipeline_factory, warehouse):
    """Two routers share the destination's partitions; small loads, each bringing new columns, interleave.
    DDL runs under a lock in the warehouse, so no ALTER TABLE races the other's; every row lands once."""
    dest = postgres_destination("dst-pg", warehouse.config(namespace="race"))
    p = pipeline_factory(ws.basic_workspace([dest]), warehouse_batch_size=10)
    second = p.start("router")
    try:
        wait_for(lambda: p.queue("SELECT count(DISTINCT owner) FROM partition_leases WHERE queue = 'batch_rt' "
                                 "AND expires_at > now()")[0][0] == 2, 60, what="both routers sharing the parts")
        p.send([ev("track", n, user=f"u{n % 17}", event="Wide", properties={f"col_{n % 40}": n, "n": n})
                for n in range(160)])
        wait_for(p.settled, 90, what="every event loaded")
        assert warehouse.sql("SELECT count(*), count(DISTINCT id) FROM race.wide") == [(160, 160)]
        assert {f"col_{k}" for k in range(40)} <= set(warehouse.columns("race", "wide"))
        loaded = [proc for proc in (p.router, second) if '"warehouse load"' in proc.output()]
        assert len(loaded) == 2, "both routers loaded"
        for proc in (p.router, second):
            assert "warehouse load failed" not in proc.output()
    finally:
        second.stop()
