"""Blocking calls from gevent workers: run on one of gevent's native threads, exceptions carried back.

A gevent threadpool prints every exception a function raises there (a plain-text traceback on
stderr) before handing it back; an expected OperationalError while Postgres is down would fill the log
with them. So the function's outcome travels back as a value and is raised on the caller's side."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def call(offload: Callable | None, fn: Callable[..., Any], *args) -> Any:
    """fn(*args) through `offload(fn, args)` (gevent: hub.threadpool.apply), or inline when None."""
    if offload is None:
        return fn(*args)
    ok, value = offload(_outcome, (fn, args))
    if ok:
        return value
    raise value


def _outcome(fn, args) -> tuple[bool, Any]:
    try:
        return True, fn(*args)
    except Exception as exc:  # noqa: BLE001 - re-raised by call(), on the caller's side
        return False, exc
