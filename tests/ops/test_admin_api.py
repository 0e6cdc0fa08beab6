"""The admin HTTP API behind SLUICE_ADMIN_TOKEN, served by a real `sluice admin` process: never open
without a token, 401 for a missing or wrong one; failed-job listing with pagination; replay by POST."""

from __future__ import annotations

import pytest
import requests

from config.settings import load_settings
from ops.admin import create_app
from tests.ops.conftest import add_failed, failed_rows, queue_rows, router_failure, transform_failure
from tests.support.procs import SluiceProcess, free_port, wait_for

TOKEN = "s3cret-admin-token"


class Admin:
    def __init__(self, url: str):
        self.url = url

    def get(self, path: str, token: str | None = TOKEN, **kw) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(self.url + path, headers=headers, timeout=15, **kw)

    def post(self, path: str, body, token: str | None = TOKEN) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.post(self.url + path, json=body, headers=headers, timeout=60)


@pytest.fixture
def admin(dsn, tmp_path):
    port = free_port()
    proc = SluiceProcess("admin", {"SLUICE_DATABASE_URL": dsn, "SLUICE_ADMIN_TOKEN": TOKEN,
                                   "SLUICE_ADMIN_PORT": str(port), "SLUICE_ADMIN_HOST": "127.0.0.1"}, tmp_path)
    api = Admin(f"http://127.0.0.1:{port}")

    def up():
        assert proc.alive(), f"sluice admin exited:\n{proc.output()}"
        return api.get("/admin/jobs").status_code == 200

    wait_for(up, timeout=30, what="the admin API to answer")
    yield api
    assert proc.stop() == 0, proc.log_path.read_text()


def test_a_token_is_required(admin):
    for path in ("/admin/jobs", "/admin/failed-jobs"):
        missing = admin.get(path, token=None)
        assert missing.status_code == 401 and "Bearer" in missing.json()["message"]
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert admin.get(path, token="wrong").status_code == 401
        assert admin.get(path, token=TOKEN + "x").status_code == 401
        basic = requests.get(admin.url + path, auth=(TOKEN, ""), timeout=5)
        assert basic.status_code == 401
    assert admin.post("/admin/replay", {"all": True, "dry_run": True}, token=None).status_code == 401
    assert admin.post("/admin/replay", {"all": True}, token="wrong").status_code == 401


def test_without_a_token_the_api_is_off():
    app = create_app(load_settings({"admin_token": "", "database_url": "postgresql://nowhere/none"}, env={}))
    client = app.test_client()
    for path in ("/admin/jobs", "/admin/failed-jobs"):
        answer = client.get(path, headers={"Authorization": "Bearer "})
        assert answer.status_code == 404 and "SLUICE_ADMIN_TOKEN" in answer.json["message"]
    assert client.post("/admin/replay", json={"all": True}).status_code == 404


def test_sluice_admin_refuses_to_start_without_a_token(dsn, tmp_path):
    proc = SluiceProcess("admin", {"SLUICE_DATABASE_URL": dsn, "SLUICE_ADMIN_TOKEN": ""}, tmp_path)
    wait_for(lambda: not proc.alive(), timeout=30, what="sluice admin to exit")
    assert "SLUICE_ADMIN_TOKEN" in proc.output()
    assert proc.stop() != 0


def test_failed_jobs_listing_and_pagination(admin, dsn):
    ids = add_failed(dsn, *[router_failure("amp", f"u{i}", i, 400 if i % 2 else 500) for i in range(7)],
                     transform_failure("hook", "u9", 9))
    everything = admin.get("/admin/failed-jobs").json()
    assert everything["count"] == 8 and [j["id"] for j in everything["jobs"]] == ids
    assert everything["next_after_id"] is None
    first = everything["jobs"][0]
    assert first["stage"] == "router" and first["destination_id"] == "amp" and first["status_code"] == 500
    assert "event" not in first and first["failed_at"].endswith("+00:00")

    seen, after, pages = [], 0, 0
    while True:
        page = admin.get("/admin/failed-jobs", params={"destination": "amp", "limit": 3, "after_id": after}).json()
        assert page["count"] == 7
        seen += [j["id"] for j in page["jobs"]]
        pages += 1
        if page["next_after_id"] is None:
            break
        after = page["next_after_id"]
    assert seen == ids[:7] and pages == 3

    assert [j["id"] for j in admin.get("/admin/failed-jobs", params={"status": "400"}).json()["jobs"]] == ids[1:7:2]
    assert [j["id"] for j in admin.get("/admin/failed-jobs",
                                       params={"stage": "user_transform"}).json()["jobs"]] == [ids[7]]
    assert admin.get("/admin/failed-jobs", params={"reason": "BOOM", "ids": f"{ids[7]},{ids[0]}"}).json()["count"] == 1
    bad = admin.get("/admin/failed-jobs", params={"stage": "nowhere"})
    assert bad.status_code == 400 and "stage" in bad.json()["message"]
    assert admin.get("/admin/failed-jobs", params={"limit": "5000"}).status_code == 400
    assert admin.get("/admin/failed-jobs", params={"since": "soon"}).status_code == 400


def test_replay_by_post_dry_run_then_for_real(admin, dsn):
    ids = add_failed(dsn, *[router_failure("amp", "u1", i) for i in range(4)], transform_failure("hook", "u2", 9))
    assert admin.post("/admin/replay", {}).status_code == 400  # a selection is always explicit
    assert admin.post("/admin/replay", {"destination": "amp", "colour": "red"}).status_code == 400
    assert admin.post("/admin/replay", {"destination": "amp", "dry_run": "yes"}).status_code == 400

    plan = admin.post("/admin/replay", {"destination": ["amp"], "dry_run": True})
    assert plan.status_code == 200, plan.text
    assert plan.json()["count"] == 4 and [j["id"] for j in plan.json()["jobs"]] == ids[:4]
    assert all(r["replayed_at"] is None for r in failed_rows(dsn)) and queue_rows(dsn, "rt_jobs") == []

    done = admin.post("/admin/replay", {"destination": "amp", "limit": 3})
    assert done.status_code == 200, done.text
    assert done.json()["replayed"] == 3
    assert done.json()["targets"] == [{"queue": "rt_jobs", "enters": "router", "destination_id": "amp", "count": 3}]
    assert [j["payload"]["replay_of"] for j in queue_rows(dsn, "rt_jobs")] == ids[:3]
    marked = {r["id"]: r for r in failed_rows(dsn)}
    assert [i for i in ids if marked[i]["replayed_at"]] == ids[:3]
    assert marked[ids[0]]["replayed_by"].startswith("admin-api")

    rest = admin.post("/admin/replay", {"all": True}).json()
    assert rest["replayed"] == 2
    assert {(t["queue"], t["destination_id"]) for t in rest["targets"]} == {("rt_jobs", "amp"), ("gw_jobs", "hook")}
    assert admin.post("/admin/replay", {"all": True}).json()["replayed"] == 0

    listing = admin.get("/admin/failed-jobs", params={"include_replayed": "true"}).json()
    assert listing["count"] == 5 and all(j["replay_count"] == 1 for j in listing["jobs"])
    assert admin.get("/admin/failed-jobs").json()["count"] == 0


def test_jobs_report_as_json(admin, dsn):
    add_failed(dsn, router_failure("amp", "u1", 1, 400, "destination answered 400: invalid api_key"),
               router_failure("amp", "u2", 2, 400, "destination answered 400: invalid api_key"))
    report = admin.get("/admin/jobs").json()
    assert set(report["queues"]) == {"gw", "rt", "batch_rt"}
    assert report["failed"] == [{"destination_id": "amp", "destination_type": "WEBHOOK", "stage": "router",
                                 "reason": "destination answered 400: invalid api_key", "count": 2, "replayed": 0,
                                 "last": report["failed"][0]["last"]}]
