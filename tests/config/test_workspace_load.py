"""The example workspace file and the two file shapes Sluice reads."""

import json
from pathlib import Path

from config.workspace import load_workspace

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, doc, name="workspace-config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc, indent=2))
    return path


def webhook(dest_id="dst-hook", **extra):
    dest = {
        "id": dest_id,
        "name": "Hook",
        "enabled": True,
        "config": {"webhookUrl": "https://example.test/hook"},
        "destinationDefinition": {"id": "dd-webhook", "name": "WEBHOOK", "displayName": "Webhook"},
    }
    dest.update(extra)
    return dest


def test_example_workspace_loads():
    ws = load_workspace(ROOT / "workspace-config.json")
    assert ws.workspace_id == "ws-example"
    web = ws.source_by_write_key("web-write-key-0001")
    backend = ws.source_by_write_key("backend-write-key-0001")
    assert web is not None and backend is not None
    assert web.name == "Web" and backend.name == "Backend"
    assert web.enabled and backend.enabled
    for source in (web, backend):
        assert sorted(d.type for d in source.destinations) == ["AM", "GA4", "WEBHOOK"]
        assert all(d.enabled and d.is_processor_enabled for d in source.destinations)
    assert ws.source_by_write_key("nope") is None
    assert ws.source_by_id("src-backend") is backend
    src, ga4 = ws.destination_by_id("dst-web-ga4")
    assert src is web
    assert ga4.display_name == "Google Analytics 4"
    assert ga4.supported_message_types == ("track", "page", "group"), "GA4 takes no identify"
    assert ga4.transformation is not None and "routed_by" in ga4.transformation.code
    assert ga4.transformation.version_id == "trv-web-ga4-enrich-1"
    _, am = ws.destination_by_id("dst-backend-amplitude")
    assert am.transformation is not None and am.transformation.id == "tr-backend-amplitude-plan"
    assert "transformEvent" in am.transformation.code
    _, hook = ws.destination_by_id("dst-web-webhook")
    assert hook.config["webhookUrl"] == "http://127.0.0.1:8099/hook"
    assert not hook.is_warehouse
    assert len(ws.fingerprint) == 64
    assert ws.path == str(ROOT / "workspace-config.json")
    assert ws.destination_by_id("nope") is None


CONFIG_GENERATOR_EXPORT = {
    "sources": [
        {
            "config": {},
            "id": "1a2b3c",
            "name": "site",
            "writeKey": "cg-write-key",
            "enabled": True,
            "sourceDefinitionId": "sd1",
            "deleted": False,
            "createdAt": "2021-01-01T00:00:00.000Z",
            "updatedAt": "2021-01-01T00:00:00.000Z",
            "sourceDefinition": {
                "id": "sd1",
                "name": "Javascript",
                "displayName": "Javascript",
                "category": None,
            },
            "destinations": [
                {
                    "config": {"trackingID": "UA-1-1"},
                    "id": "ga-dest",
                    "name": "ga",
                    "enabled": True,
                    "deleted": False,
                    "destinationDefinitionId": "dd-ga",
                    "destinationDefinition": {
                        "id": "dd-ga",
                        "name": "GA",
                        "displayName": "Google Analytics",
                        "config": {"supportedMessageTypes": ["identify", "page", "screen", "track"]},
                    },
                    "isProcessorEnabled": True,
                },
                {
                    "config": {},
                    "id": "gone",
                    "name": "deleted destination, config no longer valid",
                    "enabled": True,
                    "deleted": True,
                    "destinationDefinition": {"name": "AM"},
                },
            ],
        },
        {
            "config": {},
            "id": "old",
            "name": "deleted source",
            "writeKey": "cg-write-key",
            "enabled": True,
            "deleted": True,
            "destinations": [],
        },
    ],
    "metadata": {"sourceListStore": [], "destinationListStore": [], "connectionsStore": {}, "version": "1.0"},
}


def test_config_generator_export_loads(tmp_path):
    ws = load_workspace(write(tmp_path, CONFIG_GENERATOR_EXPORT))
    assert ws.workspace_id == "default"
    assert [s.id for s in ws.sources] == ["1a2b3c"]  # the deleted source is skipped
    source = ws.source_by_write_key("cg-write-key")
    assert source.workspace_id == "default"
    assert [d.id for d in source.destinations] == ["ga-dest"]
    ga = source.destinations[0]
    assert ga.type == "GA" and ga.display_name == "Google Analytics"
    assert ga.config == {"trackingID": "UA-1-1"}


def test_keys_are_matched_case_insensitively(tmp_path):
    doc = {
        "WorkspaceID": "ws-x",
        "Sources": [
            {
                "ID": "s1",
                "Name": "Src",
                "WriteKey": "wk-1",
                "Enabled": False,
                "SourceDefinition": {"Category": "webhook"},
                "Destinations": [
                    {
                        "Id": "d1",
                        "IsProcessorEnabled": False,
                        "Config": {"apiKey": "k"},
                        "DestinationDefinition": {
                            "Name": "AM",
                            "DisplayName": "Amplitude",
                            "Config": {"SupportedMessageTypes": ["Track"]},
                        },
                        "Transformations": [
                            {"ID": "t1", "VersionID": "v1", "Code": "function transformEvent(e){return e}"}
                        ],
                    }
                ],
            },
            {"id": "s2", "writekey": "wk-2", "destinations": []},
        ],
    }
    ws = load_workspace(write(tmp_path, doc))
    assert ws.workspace_id == "ws-x"
    s1 = ws.source_by_write_key("wk-1")
    assert s1.id == "s1" and s1.name == "Src" and s1.enabled is False and s1.category == "webhook"
    dest = s1.destinations[0]
    assert dest.type == "AM" and dest.is_processor_enabled is False
    assert dest.supported_message_types == ("track",)
    assert dest.transformation.version_id == "v1"
    s2 = ws.source_by_write_key("wk-2")
    assert s2.enabled is True and s2.name == "s2" and s2.category is None


def test_defaults_and_warehouse_flag(tmp_path):
    pg = {
        "id": "d-pg",
        "config": {"host": "db", "database": "wh", "user": "u", "port": "5432"},
        "destinationDefinition": {"name": "POSTGRES", "displayName": "PostgreSQL"},
    }
    doc = {"sources": [{"id": "s", "writeKey": "wk", "destinations": [webhook(), pg]}]}
    ws = load_workspace(write(tmp_path, doc))
    hook, pg_dest = ws.sources[0].destinations
    assert hook.is_processor_enabled is True and hook.enabled is True
    assert hook.supported_message_types is None and hook.transformation is None
    assert hook.is_warehouse is False
    assert pg_dest.is_warehouse is True and pg_dest.name == "d-pg"


def test_supported_message_types_keyed_by_mode(tmp_path):
    dest = webhook()
    dest["destinationDefinition"]["config"] = {
        "supportedMessageTypes": {"cloud": ["track", "identify"], "device": {"web": ["track"]}}
    }
    ws = load_workspace(write(tmp_path, {"sources": [{"id": "s", "writeKey": "wk", "destinations": [dest]}]}))
    assert ws.sources[0].destinations[0].supported_message_types == ("track", "identify")


def test_same_destination_connected_to_two_sources(tmp_path):
    doc = {
        "sources": [
            {"id": "s1", "writeKey": "wk1", "destinations": [webhook("shared")]},
            {"id": "s2", "writeKey": "wk2", "destinations": [webhook("shared")]},
        ]
    }
    ws = load_workspace(write(tmp_path, doc))
    source, dest = ws.destination_by_id("shared")
    assert source.id == "s1" and dest.id == "shared"


def test_transformation_file_found_by_version_id_then_id(tmp_path):
    folder = tmp_path / "transformations"
    folder.mkdir()
    (folder / "ver-1.js").write_text("// by version\n")
    (folder / "tr-1.js").write_text("// by id\n")
    (folder / "tr-2.js").write_text("// only by id\n")
    doc = {
        "sources": [
            {
                "id": "s",
                "writeKey": "wk",
                "destinations": [
                    webhook("d1", transformations=[{"id": "tr-1", "versionId": "ver-1", "config": {}}]),
                    webhook("d2", transformations=[{"id": "tr-2", "versionId": "ver-2"}]),
                    webhook("d3", transformations=[{"id": "tr-1"}]),
                ],
            }
        ]
    }
    path = write(tmp_path, doc)
    ws = load_workspace(path)
    d1, d2, d3 = ws.sources[0].destinations
    assert d1.transformation.code == "// by version\n"
    assert d2.transformation.code == "// only by id\n"
    assert d2.transformation.version_id == "ver-2"
    assert d3.transformation.code == "// by id\n" and d3.transformation.version_id == "tr-1"
    # A transformation file is part of the fingerprint.
    before = ws.fingerprint
    (folder / "ver-1.js").write_text("// by version, edited\n")
    assert load_workspace(path).fingerprint != before


def test_inline_code_wins_over_files(tmp_path):
    folder = tmp_path / "transformations"
    folder.mkdir()
    (folder / "v1.js").write_text("// from file\n")
    code = "export function transformEvent(event) { return event; }"
    dest = webhook(
        transformations=[
            {"id": "t1", "versionId": "v1", "code": code, "name": "Pass"},
            {"id": "ignored", "code": "x"},
        ]
    )
    ws = load_workspace(write(tmp_path, {"sources": [{"id": "s", "writeKey": "wk", "destinations": [dest]}]}))
    t = ws.sources[0].destinations[0].transformation
    assert (t.id, t.version_id, t.code, t.name) == ("t1", "v1", code, "Pass")


def test_missing_transformation_code_names_the_files_tried(tmp_path):
    dest = webhook(transformations=[{"id": "t9", "versionId": "v9"}])
    path = write(tmp_path, {"sources": [{"id": "s", "writeKey": "wk", "destinations": [dest]}]})
    workspace = load_workspace(path)  # the destination is off; the workspace loads
    [problem] = workspace.warnings
    assert problem.path == "$.sources[0].destinations[0].transformations[0]"
    assert "transformations/v9.js" in problem.message and "transformations/t9.js" in problem.message
    [dest] = workspace.sources[0].destinations
    assert dest.problems and "destination d" in dest.off_reason and "transformations/v9.js" in dest.off_reason
