"""When a warehouse destination syncs: syncFrequency (minutes, 30 by default), syncStartAt's grid, the
daily excludeWindow, an early sync once enough events wait, and warehouse_sync_seconds overriding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from router.warehouse_schedule import due, excluded, frequency_seconds, next_sync_after

T = datetime(2026, 12, 2, 10, 7, tzinfo=UTC)


def test_frequency():
    assert frequency_seconds({}) == 30 * 60, "RudderStack's default"
    assert frequency_seconds({"syncFrequency": "180"}) == 180 * 60
    assert frequency_seconds({"syncFrequency": "nonsense"}) == 30 * 60
    assert frequency_seconds({"syncFrequency": "180"}, override_seconds=2) == 2


def test_grid_anchored_at_sync_start():
    config = {"syncFrequency": "60", "syncStartAt": "09:30"}
    assert next_sync_after(config, T) == datetime(2026, 12, 2, 10, 30, tzinfo=UTC)
    assert next_sync_after(config, datetime(2026, 12, 2, 8, 0, tzinfo=UTC)) == datetime(2026, 12, 2, 8, 30, tzinfo=UTC)
    assert next_sync_after({"syncFrequency": "30"}, T) == T + timedelta(minutes=30)
    assert next_sync_after(config, T, override_seconds=5) == T + timedelta(seconds=5), "the override ignores the grid"


def test_exclude_window_including_across_midnight():
    config = {"excludeWindow": {"excludeWindowStartTime": "10:00", "excludeWindowEndTime": "11:00"}}
    assert excluded(config, T) and not excluded(config, T + timedelta(hours=1))
    night = {"excludeWindow": {"excludeWindowStartTime": "23:00", "excludeWindowEndTime": "02:00"}}
    assert excluded(night, datetime(2026, 12, 2, 1, 0, tzinfo=UTC)) and not excluded(night, T)
    assert not excluded({"excludeWindow": {"excludeWindowStartTime": "", "excludeWindowEndTime": ""}}, T)


def test_due():
    config = {"syncFrequency": "30"}
    assert not due(config, T, None, pending=0, early_at=100), "nothing waits"
    assert due(config, T, None, pending=1, early_at=100), "never synced"
    assert not due(config, T, T - timedelta(minutes=10), pending=5, early_at=100)
    assert due(config, T, T - timedelta(minutes=31), pending=5, early_at=100)
    assert due(config, T, T - timedelta(minutes=1), pending=100, early_at=100), "enough events wait"
    window = {**config, "excludeWindow": {"excludeWindowStartTime": "10:00", "excludeWindowEndTime": "11:00"}}
    assert not due(window, T, None, pending=10_000, early_at=100), "never in the exclude window"
