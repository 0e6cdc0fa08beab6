"""The workspace config every stage routes by: which write keys exist, which destinations each source
feeds, and their transformations. Read from rudder-server's file shape or a config-generator export,
validated as a whole, and re-read on change without ever replacing a good config with a broken one."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from config.workspace_check import (
    MISSING,
    WAREHOUSE_TYPES,
    Problem,
    check_destination_config,
    child,
    expected,
    schema_problems,
    unsupported_type,
)
from transformers.registry import spec_of

__all__ = [
    "ConfigError",
    "Destination",
    "Problem",
    "Source",
    "Transformation",
    "Workspace",
    "WorkspaceWatcher",
    "check_workspace",
    "load_workspace",
    "main_check",
]

DEFAULT_WORKSPACE_ID = "default"  # config-generator exports carry no workspaceId
TRANSFORMATIONS_DIR = "transformations"


@dataclass(frozen=True)
class Transformation:
    id: str
    version_id: str
    code: str
    name: str


@dataclass(frozen=True)
class Destination:
    id: str
    name: str
    enabled: bool
    is_processor_enabled: bool
    type: str  # destinationDefinition.name, e.g. "GA4"
    display_name: str  # destinationDefinition.displayName, the key in an event's `integrations`
    config: dict
    supported_message_types: tuple[str, ...] | None  # None = every type
    transformation: Transformation | None  # only the first one counts, as in RudderStack
    is_warehouse: bool
    # Why this destination is off (a bad config, an unsupported type); its events go to failed_jobs.
    problems: tuple[str, ...] = ()

    @property
    def off_reason(self) -> str | None:
        if not self.problems:
            return None
        return (f"destination {self.id} is off: " + "; ".join(self.problems)
                + ". Fix the workspace config and replay these events")


@dataclass(frozen=True)
class Source:
    id: str
    name: str
    write_key: str
    enabled: bool
    workspace_id: str
    category: str | None
    destinations: tuple[Destination, ...]
    type: str = ""  # sourceDefinition.name, e.g. "Javascript", "HTTP" (warehouses' context_source_type)


@dataclass(frozen=True)
class Workspace:
    workspace_id: str
    sources: tuple[Source, ...]
    path: str
    loaded_at: float
    fingerprint: str  # sha256 of the config file bytes and the transformation files it uses
    warnings: tuple[Problem, ...] = ()  # destinations that are off or left out, and why
    _by_write_key: dict = field(init=False, repr=False, compare=False)
    _by_source_id: dict = field(init=False, repr=False, compare=False)
    _by_destination_id: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_key: dict[str, Source] = {}
        by_id: dict[str, Source] = {}
        by_dest: dict[str, tuple[Source, Destination]] = {}
        for source in self.sources:
            by_key.setdefault(source.write_key, source)
            by_id.setdefault(source.id, source)
            for dest in source.destinations:
                # One destination may be connected to several sources; the first connection wins.
                by_dest.setdefault(dest.id, (source, dest))
        object.__setattr__(self, "_by_write_key", by_key)
        object.__setattr__(self, "_by_source_id", by_id)
        object.__setattr__(self, "_by_destination_id", by_dest)

    def source_by_write_key(self, write_key: str) -> Source | None:
        return self._by_write_key.get(write_key)

    def source_by_id(self, source_id: str) -> Source | None:
        return self._by_source_id.get(source_id)

    def destination_by_id(self, destination_id: str) -> tuple[Source, Destination] | None:
        return self._by_destination_id.get(destination_id)

    def why_not_delivered(self, destination_id: str) -> str | None:
        """Why a destination's queued jobs cannot be delivered (deleted, disabled, off), or None."""
        found = self._by_destination_id.get(destination_id)
        if found is None:
            return "destination deleted from the workspace config"
        dest = found[1]
        if not dest.enabled or not dest.is_processor_enabled:
            return "destination disabled"
        return dest.off_reason

    @property
    def destination_count(self) -> int:
        return sum(len(s.destinations) for s in self.sources)


class ConfigError(Exception):
    def __init__(self, file: str, problems: list[Problem]):
        self.file = file
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(p.format(self.file) for p in self.problems)


# ---------------------------------------------------------------------------------------------------
# Reading


def _get(obj: dict, name: str) -> tuple[str, Any]:
    """(key as spelled in the file, value) for `name`, matched like Go's encoding/json does for
    untagged fields: the exact spelling first, else any case-insensitive spelling."""
    if name in obj:
        return name, obj[name]
    folded = name.casefold()
    for key, value in obj.items():
        if isinstance(key, str) and key.casefold() == folded:
            return key, value
    return name, MISSING


class _Reader:
    """One walk over the decoded file that both builds the workspace and records every problem."""

    def __init__(self, file: str, base_dir: str):
        self.file = file
        self.base_dir = base_dir
        self.problems: list[Problem] = []
        self.used_files: list[tuple[str, bytes]] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    # Small typed getters: each returns the value (or a default) and records a problem on mismatch.

    def string(self, obj: dict, name: str, path: str, *, required: bool, default: str = "") -> str:
        key, value = _get(obj, name)
        if value is MISSING or (value is None and not required):
            if required:
                self.problem(child(path, key), expected("non-empty string", value))
            return default
        if not isinstance(value, str) or (required and not value.strip()):
            self.problem(child(path, key), expected("non-empty string" if required else "string", value))
            return default
        return value

    def boolean(self, obj: dict, name: str, path: str, default: bool) -> bool:
        key, value = _get(obj, name)
        if value is MISSING or value is None:
            return default
        if not isinstance(value, bool):
            self.problem(child(path, key), expected("boolean", value))
            return default
        return value

    def obj(self, obj: dict, name: str, path: str, *, required: bool) -> tuple[str, dict | None]:
        key, value = _get(obj, name)
        if value is MISSING or (value is None and not required):
            if required:
                self.problem(child(path, key), expected("object", value))
            return child(path, key), None
        if not isinstance(value, dict):
            self.problem(child(path, key), expected("object", value))
            return child(path, key), None
        return child(path, key), value

    def array(self, obj: dict, name: str, path: str) -> tuple[str, list]:
        key, value = _get(obj, name)
        if value is MISSING or value is None:
            return child(path, key), []
        if not isinstance(value, list):
            self.problem(child(path, key), expected("array", value))
            return child(path, key), []
        return child(path, key), value

    # The walk.

    def workspace(self, doc: Any) -> tuple[str, tuple[Source, ...]]:
        if not isinstance(doc, dict):
            self.problem("$", expected("object with a `sources` array", doc))
            return DEFAULT_WORKSPACE_ID, ()
        workspace_id = self.string(doc, "workspaceId", "$", required=False) or DEFAULT_WORKSPACE_ID
        key, sources = _get(doc, "sources")
        if sources is MISSING:
            hint = ""
            if doc and all(
                isinstance(v, dict) and _get(v, "sources")[1] is not MISSING for v in doc.values()
            ):
                hint = " (this looks like a multi-workspace map; give one workspace's config)"
            self.problem(child("$", key), expected("array of sources", sources) + hint)
            return workspace_id, ()
        if not isinstance(sources, list):
            self.problem(child("$", key), expected("array of sources", sources))
            return workspace_id, ()
        spath = child("$", key)
        built: list[Source] = []
        write_keys: dict[str, str] = {}
        for i, raw in enumerate(sources):
            source = self.source(raw, child(spath, i), workspace_id, write_keys)
            if source is not None:
                built.append(source)
        return workspace_id, tuple(built)

    def source(self, raw: Any, path: str, workspace_id: str, write_keys: dict[str, str]) -> Source | None:
        if not isinstance(raw, dict):
            self.problem(path, expected("source object", raw))
            return None
        if self.boolean(raw, "deleted", path, False):
            return None  # config-generator keeps deleted sources in its export
        source_id = self.string(raw, "id", path, required=True)
        write_key = self.string(raw, "writeKey", path, required=True)
        if write_key:
            wk_path = child(path, _get(raw, "writeKey")[0])
            if write_key in write_keys:
                # Don't echo the key itself: it is a credential.
                self.problem(
                    wk_path, f"expected a unique writeKey, found the same value as {write_keys[write_key]}"
                )
            else:
                write_keys[write_key] = wk_path
        name = self.string(raw, "name", path, required=False) or source_id
        enabled = self.boolean(raw, "enabled", path, True)
        source_ws = self.string(raw, "workspaceId", path, required=False) or workspace_id
        self.obj(raw, "config", path, required=False)
        category = None
        source_type = ""
        def_path, definition = self.obj(raw, "sourceDefinition", path, required=False)
        if definition is not None:
            source_type = self.string(definition, "name", def_path, required=False, default="") or ""
            category = self.string(definition, "category", def_path, required=False, default="") or None
            if _get(definition, "category")[1] == "":
                category = ""  # "" means an event-stream source; keep it distinct from absent
        dpath, raw_dests = self.array(raw, "destinations", path)
        dests: list[Destination] = []
        seen: dict[str, str] = {}
        for j, raw_dest in enumerate(raw_dests):
            dest = self.destination(raw_dest, child(dpath, j), seen)
            if dest is not None:
                dests.append(dest)
        return Source(
            id=source_id,
            name=name,
            write_key=write_key,
            enabled=enabled,
            workspace_id=source_ws,
            category=category,
            destinations=tuple(dests),
            type=source_type,
        )

    def destination(self, raw: Any, path: str, seen: dict[str, str]) -> Destination | None:
        """A destination's problems are warnings, never errors: a bad one is off (its events go to
        failed_jobs with the reason) or, when it cannot even be named, left out; the rest of the
        workspace loads, as rudder-server does."""
        outer, self.problems = self.problems, []
        try:
            dest = self._destination(raw, path, seen)
        finally:
            local, self.problems = self.problems, outer
        if dest is not None and dest.type:
            why = unsupported_type(dest.type)
            if why is not None:
                local.append(Problem(child(path, "destinationDefinition"), why))
            else:
                self.check_message_types(dest, path)
        self.problems.extend(Problem(p.path, p.message, warning=True) for p in local)
        if dest is None:
            return None
        if not dest.id or not dest.type:
            self.problems.append(Problem(path, "this destination is left out: it has no usable id or type",
                                         warning=True))
            return None
        if local:
            prefix = len(path)
            reasons = tuple(f"{p.path[prefix:].lstrip('.') or 'destination'}: {p.message}" for p in local)
            dest = dataclasses.replace(dest, problems=reasons)
        return dest

    def _destination(self, raw: Any, path: str, seen: dict[str, str]) -> Destination | None:
        if not isinstance(raw, dict):
            self.problem(path, expected("destination object", raw))
            return None
        if self.boolean(raw, "deleted", path, False):
            return None
        dest_id = self.string(raw, "id", path, required=True)
        if dest_id:
            id_path = child(path, _get(raw, "id")[0])
            if dest_id in seen:
                self.problem(
                    id_path,
                    f"expected a unique destination id, found {dest_id!r} again (also at {seen[dest_id]})",
                )
                dest_id = ""  # checked through, then left out
            else:
                seen[dest_id] = id_path
        name = self.string(raw, "name", path, required=False) or dest_id
        enabled = self.boolean(raw, "enabled", path, True)
        processor_enabled = self.boolean(raw, "isProcessorEnabled", path, True)
        config_path, config = self.obj(raw, "config", path, required=True)
        def_path, definition = self.obj(raw, "destinationDefinition", path, required=True)
        dest_type = display_name = ""
        supported: tuple[str, ...] | None = None
        if definition is not None:
            dest_type = self.string(definition, "name", def_path, required=True)
            display_name = self.string(definition, "displayName", def_path, required=False) or dest_type
            dconf_path, dconf = self.obj(definition, "config", def_path, required=False)
            if dconf is not None:
                supported = self.message_types(dconf, dconf_path)
        if config is not None and dest_type:
            self.problems.extend(check_destination_config(dest_type, config, config_path))
        if config is not None and definition is not None:
            schema = _get(definition, "configSchema")[1]
            if isinstance(schema, dict) and schema:
                self.problems.extend(schema_problems(schema, config, config_path))
        tpath, raw_trans = self.array(raw, "transformations", path)
        transformations = [self.transformation(t, child(tpath, k)) for k, t in enumerate(raw_trans)]
        return Destination(
            id=dest_id,
            name=name,
            enabled=enabled,
            is_processor_enabled=processor_enabled,
            type=dest_type,
            display_name=display_name,
            config=config if config is not None else {},
            supported_message_types=supported,
            transformation=transformations[0] if transformations else None,
            is_warehouse=dest_type in WAREHOUSE_TYPES,
        )

    def check_message_types(self, dest: Destination, path: str) -> None:
        """Warn (without turning the destination off) about message types the definition lets through
        but the destination's transformer does not take: those events would only become dead letters."""
        spec = spec_of(dest.type)
        if spec is None or dest.supported_message_types is None:
            return
        extra = [t for t in dest.supported_message_types if t not in spec.message_types]
        if extra:
            self.problems.append(Problem(
                child(child(child(path, "destinationDefinition"), "config"), "supportedMessageTypes"),
                f"{dest.type} does not take {', '.join(extra)} (it takes {', '.join(spec.message_types)}): such "
                "events go to failed_jobs; leave them out of supportedMessageTypes", warning=True))

    def message_types(self, dconf: dict, path: str) -> tuple[str, ...] | None:
        key, value = _get(dconf, "supportedMessageTypes")
        mpath = child(path, key)
        if value is MISSING or value is None:
            return None
        if isinstance(value, dict):
            # Newer destination definitions key the list by mode; cloud mode is the server-side one.
            ckey, cloud = _get(value, "cloud")
            if cloud is MISSING:
                return None
            mpath, value = child(mpath, ckey), cloud
        if not isinstance(value, list):
            self.problem(mpath, expected("array of message type strings", value))
            return None
        types: list[str] = []
        for i, item in enumerate(value):
            if isinstance(item, str) and item:
                types.append(item.lower())
            else:
                self.problem(child(mpath, i), expected("message type string", item))
        return tuple(types)

    def transformation(self, raw: Any, path: str) -> Transformation | None:
        if not isinstance(raw, dict):
            self.problem(path, expected("transformation object", raw))
            return None
        t_id = self.string(raw, "id", path, required=True)
        version_id = self.string(raw, "versionId", path, required=False)
        name = self.string(raw, "name", path, required=False) or t_id
        code_key, code = _get(raw, "code")
        if code is not MISSING and code is not None:
            if isinstance(code, str) and code.strip():
                return Transformation(id=t_id, version_id=version_id or t_id, code=code, name=name)
            self.problem(child(path, code_key), expected("non-empty string of JavaScript", code))
            return None
        code = self.code_file(path, [version_id, t_id])
        if code is None:
            return None
        return Transformation(id=t_id, version_id=version_id or t_id, code=code, name=name)

    def code_file(self, path: str, names: list[str]) -> str | None:
        folder = os.path.join(self.base_dir, TRANSFORMATIONS_DIR)
        tried: list[str] = []
        for name in names:
            if not name:
                continue
            if not _SAFE_NAME.match(name):
                self.problem(path, f"expected an id usable as a file name, found {name!r}")
                return None
            candidate = os.path.join(folder, name + ".js")
            tried.append(os.path.join(TRANSFORMATIONS_DIR, name + ".js"))
            try:
                with open(candidate, "rb") as fh:
                    data = fh.read()
            except FileNotFoundError:
                continue
            except OSError as exc:
                self.problem(path, f"cannot read transformation file {candidate}: {exc.strerror}")
                return None
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                self.problem(path, f"expected UTF-8 JavaScript in {candidate}, found undecodable bytes")
                return None
            self.used_files.append((name + ".js", data))
            return text
        if tried:
            self.problem(
                path,
                "expected inline `code` or a file "
                + " or ".join(tried)
                + f" beside the config file, found neither (looked in {folder})",
            )
        return None


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _decode(data: bytes) -> tuple[Any, list[Problem]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, [Problem("$", f"expected UTF-8 JSON, found an undecodable byte at offset {exc.start}")]
    try:
        return json.loads(text), []
    except json.JSONDecodeError as exc:
        return None, [Problem("$", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")]


def _read(path: str | os.PathLike) -> tuple[Workspace | None, list[Problem]]:
    file = os.fspath(path)
    try:
        with open(file, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return None, [Problem("$", f"expected a readable config file, found: {exc.strerror or exc}")]
    doc, problems = _decode(data)
    if problems:
        return None, problems
    reader = _Reader(file, os.path.dirname(os.path.abspath(file)))
    workspace_id, sources = reader.workspace(doc)
    if any(not p.warning for p in reader.problems):
        return None, reader.problems
    digest = hashlib.sha256(data)
    for name, content in reader.used_files:
        digest.update(b"\0" + name.encode() + b"\0")
        digest.update(content)
    workspace = Workspace(
        workspace_id=workspace_id,
        sources=sources,
        path=os.path.abspath(file),
        loaded_at=time.time(),
        fingerprint=digest.hexdigest(),
        warnings=tuple(reader.problems),
    )
    return workspace, list(reader.problems)


def load_workspace(path: str | os.PathLike) -> Workspace:
    """Load and validate the config file; raise ConfigError listing every problem found when the file
    cannot be used. Problems confined to a destination are warnings (`Workspace.warnings`)."""
    workspace, problems = _read(path)
    if workspace is None:
        raise ConfigError(os.fspath(path), problems)
    return workspace


def check_workspace(path: str | os.PathLike) -> list[Problem]:
    """Every problem in the config file, errors and warnings, in file order; [] when it is fine."""
    return _read(path)[1]


def main_check(path: str | os.PathLike = "workspace-config.json") -> int:
    """`sluice config check [FILE]`: every error and warning one per line; exit 1 when the file cannot be
    used, 0 when it loads (warnings name the destinations that are off and what happens to their events)."""
    file = os.fspath(path)
    workspace, problems = _read(file)
    for p in problems:
        print(p.format(file))
    if workspace is None:
        return 1
    off = sum(1 for s in workspace.sources for d in s.destinations if d.problems)
    print(f"{file}: OK ({len(workspace.sources)} sources, {workspace.destination_count} destinations"
          + (f", {off} off: their events go to failed_jobs until fixed" if off else "") + ")")
    return 0


# ---------------------------------------------------------------------------------------------------
# Watching


_FULL_CHECK_EVERY = 12  # polls between unconditional re-reads


class WorkspaceWatcher:
    """Holds the last good workspace and re-reads the file when it (or a transformation file) changes.

    A broken new file is logged with every problem and reported to `on_error`; `current` keeps the
    last good config. The first load happens in the constructor and raises ConfigError: a service
    should not start without a good config."""

    def __init__(
        self,
        path: str | os.PathLike,
        poll_interval: float = 5.0,
        on_change: Callable[[Workspace], None] | None = None,
        on_error: Callable[[ConfigError], None] | None = None,
        logger: logging.Logger | None = None,
    ):
        self.path = os.fspath(path)
        self.poll_interval = poll_interval
        self.on_change = on_change
        self.on_error = on_error
        self.log = logger or logging.getLogger("sluice.config")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._signature = self._stat_signature()
        self._current = load_workspace(self.path)
        for warning in self._current.warnings:
            self.log.warning("workspace config: %s", warning.format(self.path))
        self._last_error: str | None = None

    @property
    def current(self) -> Workspace:
        return self._current

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="workspace-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=max(1.0, self.poll_interval * 2))

    def _run(self) -> None:
        polls = 0
        while not self._stop.wait(self.poll_interval):
            polls += 1
            try:
                # A cheap stat pass first: the full read only when something on disk moved, plus
                # now and then anyway, since a same-size rewrite within one mtime tick looks unmoved.
                if self._stat_signature() != self._signature or polls % _FULL_CHECK_EVERY == 0:
                    self.check_now()
            except Exception:  # the watcher must outlive a bad callback
                self.log.exception("workspace config watcher: unexpected error")

    def _stat_signature(self) -> tuple:
        parts: list[tuple] = []
        try:
            st = os.stat(self.path)
            parts.append((self.path, st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            parts.append((self.path, None))
        folder = os.path.join(os.path.dirname(os.path.abspath(self.path)), TRANSFORMATIONS_DIR)
        try:
            with os.scandir(folder) as entries:
                for entry in sorted(entries, key=lambda e: e.name):
                    try:
                        st = entry.stat()
                        parts.append((entry.name, st.st_mtime_ns, st.st_size, st.st_ino))
                    except OSError:
                        continue
        except OSError:
            pass
        return tuple(parts)

    def check_now(self) -> bool:
        """Re-read the file now; True if a new config was applied."""
        with self._lock:
            self._signature = self._stat_signature()
            workspace, problems = _read(self.path)
            if problems or workspace is None:
                error = ConfigError(self.path, problems)
                text = str(error)
                if text == self._last_error:
                    return False  # already reported this exact breakage
                self._last_error = text
                self.log.error(
                    "workspace config %s rejected, keeping the last good one (%s): %d problem(s)\n%s",
                    self.path,
                    self._current.fingerprint[:12],
                    len(problems),
                    text,
                    extra={"config_file": self.path, "problems": [p.format(self.path) for p in problems]},
                )
                if self.on_error is not None:
                    self.on_error(error)
                return False
            self._last_error = None
            if workspace.fingerprint == self._current.fingerprint:
                return False
            self._current = workspace
            self.log.info(
                "workspace config %s applied (%s): %d sources, %d destinations",
                self.path,
                workspace.fingerprint[:12],
                len(workspace.sources),
                workspace.destination_count,
            )
            for warning in workspace.warnings:
                self.log.warning("workspace config: %s", warning.format(self.path))
        if self.on_change is not None:
            self.on_change(workspace)
        return True
