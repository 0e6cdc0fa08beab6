"""When a warehouse destination syncs, from RudderStack's config keys: every `syncFrequency` minutes
(30 by default), on a grid anchored at `syncStartAt` (HH:MM, UTC) when given, never inside the daily
`excludeWindow`; earlier once enough events wait. `warehouse_sync_seconds` overrides the frequency."""

from __future__ import annotations

import datetime
import re

DEFAULT_FREQUENCY_MINUTES = 30.0
_HHMM = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")


def frequency_seconds(config: dict, override_seconds: float = 0.0) -> float:
    if override_seconds and override_seconds > 0:
        return float(override_seconds)
    raw = config.get("syncFrequency")
    try:
        minutes = float(raw)
    except (TypeError, ValueError):
        minutes = DEFAULT_FREQUENCY_MINUTES
    return max(minutes, 1.0) * 60.0 if minutes == minutes else DEFAULT_FREQUENCY_MINUTES * 60.0


def _minutes_of_day(text) -> int | None:
    if not isinstance(text, str):
        return None
    m = _HHMM.match(text)
    if not m:
        return None
    hours, minutes = int(m.group(1)), int(m.group(2))
    if hours > 23 or minutes > 59:
        return None
    return hours * 60 + minutes


def excluded(config: dict, now: datetime.datetime) -> bool:
    """Inside the daily exclude window (which may wrap around midnight)?"""
    window = config.get("excludeWindow")
    if not isinstance(window, dict):
        return False
    start = _minutes_of_day(window.get("excludeWindowStartTime"))
    end = _minutes_of_day(window.get("excludeWindowEndTime"))
    if start is None or end is None or start == end:
        return False
    minute = now.astimezone(datetime.UTC).hour * 60 + now.astimezone(datetime.UTC).minute
    return start <= minute < end if start < end else (minute >= start or minute < end)


def next_sync_after(config: dict, last: datetime.datetime, override_seconds: float = 0.0) -> datetime.datetime:
    """The first scheduled sync strictly after `last`."""
    every = datetime.timedelta(seconds=frequency_seconds(config, override_seconds))
    anchor_minutes = None if override_seconds and override_seconds > 0 else _minutes_of_day(config.get("syncStartAt"))
    if anchor_minutes is None:
        return last + every
    last = last.astimezone(datetime.UTC)
    anchor = last.replace(hour=anchor_minutes // 60, minute=anchor_minutes % 60, second=0, microsecond=0)
    if anchor > last:
        anchor -= datetime.timedelta(days=1)
    steps = (last - anchor) // every + 1
    return anchor + steps * every


def due(config: dict, now: datetime.datetime, last_attempt: datetime.datetime | None, pending: int,
        early_at: int, override_seconds: float = 0.0) -> bool:
    """Should a sync start now? Never with nothing waiting, never in the exclude window."""
    if pending <= 0 or excluded(config, now):
        return False
    if early_at > 0 and pending >= early_at:
        return True
    if last_attempt is None:
        return True
    return now >= next_sync_after(config, last_attempt, override_seconds)
