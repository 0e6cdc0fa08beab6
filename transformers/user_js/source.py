"""Turn a user transformation (an ES module, codeVersion "1") into a script V8 can run in a context.

We have no module loader: `import` of anything is an error, and `export` keywords are stripped while
the exported names are remembered so the runtime can find transformEvent / transformBatch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

# The name the user's script gets in stack traces; the runtime shows it as "base transformation".
USER_SCRIPT_NAME = "user_transformation"

_IMPORT = re.compile(
    r"""^[ \t]*import\s*(?:[\w*{}\s,$]+?\s*from\s*)?(['"])(?P<module>[^'"\n]+)\1""",
    re.MULTILINE,
)
_EXPORT_DECLARATION = re.compile(
    r"^(?P<indent>[ \t]*)export\s+(?:default\s+)?"
    r"(?=(?:async\s+)?function\b|class\b|const\b|let\b|var\b)",
    re.MULTILINE,
)
_DECLARED_NAME = re.compile(
    r"(?:(?:async\s+)?function\s*\*?\s*|class\s+|(?:const|let|var)\s+)(?P<name>[A-Za-z_$][\w$]*)"
)
_EXPORT_LIST = re.compile(r"^[ \t]*export\s*\{(?P<names>[^}]*)\}\s*;?", re.MULTILINE)
_IDENTIFIER = re.compile(r"^[A-Za-z_$][\w$]*$")


class SourceError(Exception):
    """The user's module cannot be turned into a script (e.g. an import we cannot satisfy)."""


@dataclass(frozen=True)
class PreparedSource:
    script: str  # hands the module to the runtime's load(), which answers with a JSON status
    exported: tuple[str, ...]


def prepare(code: str) -> PreparedSource:
    """Check imports, strip `export`, and wrap the module so its exports can be read back."""
    match = _IMPORT.search(code)
    if match:
        raise SourceError(f"import from {match.group('module')} failed. Module not found.")

    exported: dict[str, str] = {}  # exported name -> local name

    def strip_declaration(m: re.Match[str]) -> str:
        declared = _DECLARED_NAME.match(code, m.end())
        if declared:
            exported.setdefault(declared.group("name"), declared.group("name"))
        return m.group("indent")

    def strip_list(m: re.Match[str]) -> str:
        for item in m.group("names").split(","):
            parts = item.split()
            if len(parts) == 3 and parts[1] == "as":
                local, name = parts[0], parts[2]
            elif len(parts) == 1:
                local = name = parts[0]
            else:
                continue
            if _IDENTIFIER.match(local) and _IDENTIFIER.match(name):
                exported[name] = local
        # Keep the line count so stack traces point at the user's own lines.
        return "\n" * m.group(0).count("\n")

    body = _EXPORT_DECLARATION.sub(strip_declaration, code)
    body = _EXPORT_LIST.sub(strip_list, body)

    names = dict(exported)
    for fallback in ("transformEvent", "transformBatch"):
        names.setdefault(fallback, fallback)
    entries = ",".join(
        f"{json.dumps(name)}:(typeof {local}==='undefined'?undefined:{local})"
        for name, local in names.items()
    )
    # Module code is strict. The prefix shares line 1 with the user's code so line numbers match.
    script = (
        f'__sluice.load(function(){{"use strict";{body}\n;return {{{entries}}};}},'
        f"{json.dumps(list(exported))})\n//# sourceURL={USER_SCRIPT_NAME}\n"
    )
    return PreparedSource(script=script, exported=tuple(exported))
