"""Every mistake in a workspace file is reported at once, each with its JSON path."""

import json
from pathlib import Path

import pytest

from config.workspace import ConfigError, Problem, check_workspace, load_workspace, main_check

ROOT = Path(__file__).resolve().parents[2]


def definition(name):
    return {"id": "dd-" + name.lower(), "name": name, "displayName": name.title()}


BROKEN = {
    "workspaceId": "ws",
    "sources": [
        {  # 0: fine apart from its destinations
            "id": "s0",
            "writeKey": "wk-same",
            "enabled": True,
            "destinations": [
                {
                    "id": "ga4-a",
                    "config": {"measurementId": "G-1"},
                    "destinationDefinition": definition("GA4"),
                },
                {
                    "id": "ga4-b",
                    "config": {"apiSecret": "s", "typesOfClient": "firebase", "measurementId": "G-1"},
                    "destinationDefinition": definition("GA4"),
                },
                {"id": "ga", "config": {"trackingID": 42}, "destinationDefinition": definition("GA")},
                {"id": "am", "config": {"residencyServer": "US"}, "destinationDefinition": definition("AM")},
                {
                    "id": "hook",
                    "config": {
                        "webhookUrl": "ftp://example.test/x",
                        "webhookMethod": "FETCH",
                        "headers": [{"from": "X-A", "to": "1"}, {"from": "X-B"}, "X-C: 3"],
                    },
                    "destinationDefinition": definition("WEBHOOK"),
                },
                {
                    "id": "pg",
                    "config": {"host": "db", "user": ""},
                    "destinationDefinition": definition("POSTGRES"),
                },
                {
                    "id": "filtered",
                    "config": {
                        "webhookUrl": "http://127.0.0.1/x",
                        "headers": {"X-A": "1"},
                        "eventFilteringOption": "allowlist",
                        "whitelistedEvents": [{"eventName": "ok"}, {"name": "wrong key"}],
                        "blacklistedEvents": "Heartbeat",
                    },
                    "destinationDefinition": definition("WEBHOOK"),
                },
                {"id": "hook", "config": [], "destinationDefinition": {"displayName": "No name"}},
                {"id": "no-def", "config": {}},
                {
                    "id": "tr",
                    "config": {"webhookUrl": "https://x.test"},
                    "destinationDefinition": definition("WEBHOOK"),
                    "transformations": [
                        {"id": "t-missing", "versionId": "v-missing"},
                        {"versionId": 3, "code": ""},
                    ],
                },
                "not a destination",
            ],
        },
        {  # 1: a source with wrong types everywhere
            "id": "",
            "writeKey": "wk-same",
            "enabled": "yes",
            "destinations": {},
        },
        {"writeKey": 7, "enabled": None},  # 2: no id; writeKey a number; null enabled is fine
        [],  # 3
    ],
}

EXPECTED = [
    (
        "$.sources[0].destinations[0].config.apiSecret",
        "expected non-empty string, found nothing (key is missing)",
    ),
    (
        "$.sources[0].destinations[1].config.firebaseAppId",
        'expected non-empty string (typesOfClient is "firebase"), found nothing',
    ),
    ("$.sources[0].destinations[2].config.trackingID", "expected non-empty string, found number"),
    ("$.sources[0].destinations[3].config.apiKey", "expected non-empty string, found nothing"),
    ("$.sources[0].destinations[3].config.residencyServer", "expected one of 'standard', 'EU', found 'US'"),
    (
        "$.sources[0].destinations[4].config.webhookUrl",
        "expected an http:// or https:// URL, found scheme 'ftp'",
    ),
    (
        "$.sources[0].destinations[4].config.webhookMethod",
        "expected one of 'GET', 'POST', 'PUT', 'PATCH', 'DELETE', found 'FETCH'",
    ),
    ("$.sources[0].destinations[4].config.headers[1].to", "expected string, found nothing"),
    ("$.sources[0].destinations[4].config.headers[2]", "expected object {from, to}, found string"),
    ("$.sources[0].destinations[5].config.database", "expected non-empty string, found nothing"),
    ("$.sources[0].destinations[5].config.user", "expected non-empty string, found empty string"),
    ("$.sources[0].destinations[6].config.headers", "expected array of {from, to} objects, found object"),
    (
        "$.sources[0].destinations[6].config.eventFilteringOption",
        "expected one of 'disable', 'whitelistedEvents', 'blacklistedEvents', found 'allowlist'",
    ),
    ("$.sources[0].destinations[6].config.whitelistedEvents[1].eventName", "expected string, found nothing"),
    (
        "$.sources[0].destinations[6].config.blacklistedEvents",
        "expected array of {eventName} objects, found string",
    ),
    (
        "$.sources[0].destinations[7].id",
        "expected a unique destination id, found 'hook' again (also at $.sources[0].destinations[4].id)",
    ),
    ("$.sources[0].destinations[7].config", "expected object, found array"),
    ("$.sources[0].destinations[7].destinationDefinition.name", "expected non-empty string, found nothing"),
    ("$.sources[0].destinations[7]", "this destination is left out: it has no usable id or type"),
    ("$.sources[0].destinations[8].destinationDefinition", "expected object, found nothing"),
    ("$.sources[0].destinations[8]", "this destination is left out: it has no usable id or type"),
    (
        "$.sources[0].destinations[9].transformations[0]",
        "expected inline `code` or a file transformations/v-missing.js or transformations/t-missing.js",
    ),
    ("$.sources[0].destinations[9].transformations[1].id", "expected non-empty string, found nothing"),
    ("$.sources[0].destinations[9].transformations[1].versionId", "expected string, found number"),
    (
        "$.sources[0].destinations[9].transformations[1].code",
        "expected non-empty string of JavaScript, found empty string",
    ),
    ("$.sources[0].destinations[10]", "expected destination object, found string"),
    ("$.sources[1].id", "expected non-empty string, found empty string"),
    ("$.sources[1].writeKey", "expected a unique writeKey, found the same value as $.sources[0].writeKey"),
    ("$.sources[1].enabled", "expected boolean, found string"),
    ("$.sources[1].destinations", "expected array, found object"),
    ("$.sources[2].id", "expected non-empty string, found nothing (key is missing)"),
    ("$.sources[2].writeKey", "expected non-empty string, found number"),
    ("$.sources[3]", "expected source object, found array"),
]


def write(tmp_path, doc) -> Path:
    path = tmp_path / "workspace-config.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


def test_every_mistake_is_reported_with_its_path(tmp_path):
    problems = check_workspace(write(tmp_path, BROKEN))
    got = [(p.path, p.message) for p in problems]
    assert [path for path, _ in got] == [path for path, _ in EXPECTED], "\n".join(f"{p}: {m}" for p, m in got)
    for (path, message), (_, want_start) in zip(got, EXPECTED, strict=True):
        assert message.startswith(want_start), (path, message)


def test_config_error_lists_every_problem_one_per_line(tmp_path):
    path = write(tmp_path, BROKEN)
    with pytest.raises(ConfigError) as info:
        load_workspace(path)
    error = info.value
    assert error.file == str(path)
    assert len(error.problems) == len(EXPECTED)
    lines = str(error).splitlines()
    assert len(lines) == len(EXPECTED)
    assert (
        lines[0]
        == f"{path}: warning: $.sources[0].destinations[0].config.apiSecret: expected non-empty string, found nothing "
           "(key is missing)"
    )
    # The file is unusable because of its sources; its destinations' problems alone are only warnings.
    errors = [p for p in error.problems if not p.warning]
    assert {p.path[:len("$.sources[1]")] for p in errors} == {"$.sources[1]", "$.sources[2]", "$.sources[3]"}


def test_problems_never_echo_the_write_key(tmp_path):
    text = "\n".join(p.message for p in check_workspace(write(tmp_path, BROKEN)))
    assert "wk-same" not in text


@pytest.mark.parametrize(
    "text, line, column",
    [
        ('{"sources": [\n  {"id": "s",}\n]}', 2, 14),
        ('{"sources": []', 1, 15),
        ("", 1, 1),
    ],
)
def test_invalid_json_reports_line_and_column(tmp_path, text, line, column):
    path = tmp_path / "workspace-config.json"
    path.write_text(text)
    [problem] = check_workspace(path)
    assert problem.path == "$"
    assert problem.message.startswith(f"invalid JSON at line {line}, column {column}: ")


@pytest.mark.parametrize(
    "doc, path, message",
    [
        ([], "$", "expected object with a `sources` array, found array"),
        ({"workspaceId": "ws"}, "$.sources", "expected array of sources, found nothing (key is missing)"),
        ({"sources": None}, "$.sources", "expected array of sources, found null"),
        ({"workspaceId": 5, "sources": []}, "$.workspaceId", "expected string, found number"),
        (
            {"ws1": {"sources": []}},
            "$.sources",
            "expected array of sources, found nothing (key is missing) (this looks like a multi-workspace map",
        ),
        (
            {
                "sources": [
                    {
                        "id": "s",
                        "writeKey": "k",
                        "destinations": [
                            {"id": "d", "config": {}, "destinationDefinition": {"name": "WEBHOOK"}}
                        ],
                    }
                ]
            },
            "$.sources[0].destinations[0].config.webhookUrl",
            "expected non-empty string, found nothing",
        ),
        (
            {
                "sources": [
                    {
                        "id": "s",
                        "writeKey": "k",
                        "destinations": [
                            {
                                "id": "d",
                                "config": {"webhookUrl": "example.test/x"},
                                "destinationDefinition": {"name": "WEBHOOK"},
                            }
                        ],
                    }
                ]
            },
            "$.sources[0].destinations[0].config.webhookUrl",
            "expected an http:// or https:// URL, found a string with no scheme",
        ),
        (
            {
                "sources": [
                    {
                        "id": "s",
                        "writeKey": "k",
                        "destinations": [
                            {
                                "id": "d",
                                "config": {"apiSecret": "x", "typesOfClient": "gtag"},
                                "destinationDefinition": {"name": "GA4"},
                            }
                        ],
                    }
                ]
            },
            "$.sources[0].destinations[0].config.measurementId",
            "expected non-empty string, found nothing",
        ),
        (
            {
                "sources": [
                    {
                        "id": "s",
                        "writeKey": "k",
                        "destinations": [
                            {
                                "id": "d",
                                "config": {"webhookUrl": "https://x.test/"},
                                "destinationDefinition": {
                                    "name": "WEBHOOK",
                                    "config": {"supportedMessageTypes": "track"},
                                },
                            }
                        ],
                    }
                ]
            },
            "$.sources[0].destinations[0].destinationDefinition.config.supportedMessageTypes",
            "expected array of message type strings, found string",
        ),
        (
            {
                "sources": [
                    {
                        "id": "s",
                        "writeKey": "k",
                        "destinations": [
                            {
                                "id": "d",
                                "config": {"webhookUrl": "https://x.test/"},
                                "destinationDefinition": {"name": "WEBHOOK"},
                                "transformations": [{"id": "../../etc/passwd"}],
                            }
                        ],
                    }
                ]
            },
            "$.sources[0].destinations[0].transformations[0]",
            "expected an id usable as a file name, found '../../etc/passwd'",
        ),
        (
            {
                "sources": [
                    {
                        "id": "s",
                        "writeKey": "k",
                        "destinations": [
                            {
                                "id": "d",
                                "config": {"port": "x", "host": "h", "database": "d", "user": "u"},
                                "destinationDefinition": {"name": "POSTGRES"},
                            }
                        ],
                    }
                ]
            },
            "$.sources[0].destinations[0].config.port",
            "expected port number (number or digit string), found string",
        ),
        (
            {
                "sources": [
                    {
                        "id": "s",
                        "writeKey": "k",
                        "destinations": [
                            {
                                "id": "d",
                                "config": {"webhookUrl": "http://x"},
                                "destinationDefinition": {"name": "WEBHOOK"},
                            }
                        ],
                        "odd key": {},
                        "sourceDefinition": [],
                    }
                ]
            },
            "$.sources[0].sourceDefinition",
            "expected object, found array",
        ),
    ],
)
def test_single_mistakes(tmp_path, doc, path, message):
    problems = check_workspace(write(tmp_path, doc))
    assert len(problems) == 1, problems
    assert problems[0].path == path
    assert problems[0].message.startswith(message), problems[0].message


def test_keys_with_odd_characters_are_quoted_in_paths(tmp_path):
    from config.workspace_check import child

    assert child("$.a", "b c") == '$.a["b c"]'
    assert child("$", 3) == "$[3]"


def test_missing_file(tmp_path):
    [problem] = check_workspace(tmp_path / "nope.json")
    assert problem == Problem("$", "expected a readable config file, found: No such file or directory")


def test_check_example_is_clean():
    assert check_workspace(ROOT / "workspace-config.json") == []


def test_main_check_ok_and_failure(tmp_path, capsys):
    assert main_check(str(ROOT / "workspace-config.json")) == 0
    out = capsys.readouterr().out
    assert out == f"{ROOT / 'workspace-config.json'}: OK (2 sources, 6 destinations)\n"
    path = write(tmp_path, BROKEN)
    assert main_check(path) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(EXPECTED)
    assert all(line.startswith((f"{path}: $.sources[", f"{path}: warning: $.sources[0].destinations[")) for line in lines)


def test_unsupported_warehouses_are_named_in_a_warning(tmp_path, capsys):
    from tests.support import workspace as ws

    pg = ws.destination("pg", "POSTGRES", "PostgreSQL", {"url": "postgresql://u:p@127.0.0.1:5432/db"})
    bq = ws.destination("bq", "BQ", "BigQuery", {"project": "p"})
    snow = ws.destination("snow", "SNOWFLAKE", "Snowflake", {})
    path = ws.write(tmp_path / "w.json", ws.basic_workspace([pg, bq, snow]))
    assert main_check(path) == 0
    out = capsys.readouterr().out
    assert ("warning: $.sources[0].destinations[1].destinationDefinition: warehouse destination type BQ is not "
            "supported yet") in out
    assert "destinations[2].destinationDefinition: warehouse destination type SNOWFLAKE is not supported yet" in out
    assert "destinations[0]" not in out, "POSTGRES with a url needs no host, database or user"
    assert "2 off: their events go to failed_jobs until fixed" in out


def test_postgres_config_mistakes(tmp_path, capsys):
    from tests.support import workspace as ws

    pg = ws.destination("pg", "POSTGRES", "PostgreSQL", {"host": "h", "database": "d", "user": "u", "port": "x5",
                                                         "sslMode": "sometimes", "syncFrequency": "often"})
    path = ws.write(tmp_path / "w.json", ws.basic_workspace([pg]))
    assert main_check(path) == 0, "a destination's mistakes turn it off; the workspace still loads"
    out = capsys.readouterr().out
    for key in ("port", "sslMode", "syncFrequency"):
        assert f"$.sources[0].destinations[0].config.{key}" in out
