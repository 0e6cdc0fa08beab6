"""Re-reading the workspace file: a broken file never replaces a good config."""

import json
import logging
import time

import pytest

from config.workspace import ConfigError, WorkspaceWatcher


def config(write_key="wk-1", url="https://example.test/hook", transformations=None):
    dest = {
        "id": "d1",
        "config": {"webhookUrl": url},
        "destinationDefinition": {"name": "WEBHOOK", "displayName": "Webhook"},
    }
    if transformations is not None:
        dest["transformations"] = transformations
    return {"workspaceId": "ws", "sources": [{"id": "s1", "writeKey": write_key, "destinations": [dest]}]}


@pytest.fixture
def setup(tmp_path):
    path = tmp_path / "workspace-config.json"
    path.write_text(json.dumps(config()))
    changes, errors = [], []
    watcher = WorkspaceWatcher(path, poll_interval=0.05, on_change=changes.append, on_error=errors.append)
    yield path, watcher, changes, errors
    watcher.stop()


def test_unchanged_file_is_not_reapplied(setup):
    path, watcher, changes, errors = setup
    assert watcher.current.source_by_write_key("wk-1") is not None
    assert watcher.check_now() is False
    path.write_text(json.dumps(config(), indent=4))  # same meaning, new bytes: a new fingerprint
    assert watcher.check_now() is True
    assert len(changes) == 1 and errors == []


def test_good_then_broken_keeps_last_good(setup, caplog):
    path, watcher, changes, errors = setup
    good = watcher.current
    path.write_text(json.dumps(config(url="ftp://nope")).replace('"s1"', '""'))
    with caplog.at_level(logging.ERROR, logger="sluice.config"):
        assert watcher.check_now() is False
    assert watcher.current is good
    assert changes == []
    [error] = errors
    assert isinstance(error, ConfigError)
    assert [p.path for p in error.problems] == [
        "$.sources[0].id",
        "$.sources[0].destinations[0].config.webhookUrl",
    ]
    # The log names every problem.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "$.sources[0].id" in logged and "config.webhookUrl" in logged
    # The same breakage is reported once, not on every poll.
    assert watcher.check_now() is False
    assert len(errors) == 1


def test_broken_then_fixed_applies(setup):
    path, watcher, changes, errors = setup
    path.write_text('{"sources": [')
    assert watcher.check_now() is False
    assert "invalid JSON at line 1" in str(errors[0])
    path.write_text(json.dumps(config(write_key="wk-2")))
    assert watcher.check_now() is True
    assert watcher.current.source_by_write_key("wk-2") is not None
    assert watcher.current.source_by_write_key("wk-1") is None
    assert changes == [watcher.current]


def test_transformation_file_change_is_applied(setup):
    path, watcher, changes, errors = setup
    path.write_text(json.dumps(config(transformations=[{"id": "t1", "versionId": "v1"}])))
    assert watcher.check_now() is False  # the file it names does not exist yet
    assert "transformations/v1.js" in str(errors[0])
    (path.parent / "transformations").mkdir()
    (path.parent / "transformations" / "v1.js").write_text("// one\n")
    assert watcher.check_now() is True
    assert watcher.current.sources[0].destinations[0].transformation.code == "// one\n"
    (path.parent / "transformations" / "v1.js").write_text("// two\n")
    assert watcher.check_now() is True
    assert watcher.current.sources[0].destinations[0].transformation.code == "// two\n"


def test_broken_file_at_start_raises(tmp_path):
    path = tmp_path / "workspace-config.json"
    path.write_text("{}")
    with pytest.raises(ConfigError):
        WorkspaceWatcher(path)


def test_background_thread_picks_up_changes(setup):
    path, watcher, changes, errors = setup
    watcher.start()
    path.write_text(json.dumps(config(write_key="wk-3333")))
    deadline = time.monotonic() + 5
    while not changes and time.monotonic() < deadline:
        time.sleep(0.02)
    assert watcher.current.source_by_write_key("wk-3333") is not None
    watcher.stop()
    assert watcher._thread is None
