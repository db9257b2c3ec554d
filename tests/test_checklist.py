"""docs/CHECKLIST.md cannot rot silently: every endpoint, make target, test, file and setting it
names in `code` must exist in the app, the Makefile, the tests, the tree and `Settings`."""

from __future__ import annotations

import ast
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from config import Settings
from tests.conftest import make_client

ROOT = Path(__file__).resolve().parent.parent
CHECKLIST = ROOT / "docs" / "CHECKLIST.md"

_SPAN = re.compile(r"`([^`\n]+)`")
_ENDPOINT = re.compile(r"(GET|POST|PUT|PATCH|DELETE) (/\S*)")
_MAKE = re.compile(r"make ([\w-]+)(?: .*)?")
_TEST = re.compile(r"(tests/[\w/]+\.py)::(\w+)")
_FILE = re.compile(
    r"(?:\.?[\w-]+/)*(?:[\w-]+\.(?:py|md|txt|json|toml|png)|[\w-]+/|Procfile|Makefile|\.ci/run)"
)
_SETTING = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|PORT")


@dataclass
class Names:
    """What a checklist names, by kind."""

    endpoints: set[tuple[str, str]] = field(default_factory=set)
    targets: set[str] = field(default_factory=set)
    tests: set[tuple[str, str]] = field(default_factory=set)
    files: set[str] = field(default_factory=set)
    settings: set[str] = field(default_factory=set)


def names_in(text: str) -> Names:
    names = Names()
    for span in _SPAN.findall(text):
        if match := _ENDPOINT.fullmatch(span):
            names.endpoints.add((match[1], match[2]))
        elif match := _MAKE.fullmatch(span):
            names.targets.add(match[1])
        elif match := _TEST.fullmatch(span):
            names.tests.add((match[1], match[2]))
            names.files.add(match[1])
        elif _FILE.fullmatch(span):
            names.files.add(span)
        elif _SETTING.fullmatch(span):
            names.settings.add(span)
    return names


def answered_by(client: TestClient, method: str, path: str) -> bool:
    """Whether a route whose template is exactly `path` answers `method` on it.

    The placeholders get harmless values and the request is sent; the app's own metrics then say
    which route template answered (a request no route matches is counted as "unmatched", a
    wrong method as 405)."""
    concrete = re.sub(
        r"\{(\w+)\}", lambda m: str(uuid.uuid4()) if m[1].endswith("id") else "x.jpg", path
    )
    client.request(method, concrete)
    text = client.get("/metrics").text
    return any(
        sample.labels.get("method") == method
        and sample.labels.get("route") == path
        and sample.labels.get("status") != "405"
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    )


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))


def functions_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }


def problems(text: str, client: TestClient) -> list[str]:
    """Everything `text` names that does not exist, one sentence each."""
    names = names_in(text)
    found = []
    for method, path in sorted(names.endpoints):
        if not answered_by(client, method, path):
            found.append(f"no route answers {method} {path}")
    found += [f"no make target {t}" for t in sorted(names.targets - make_targets())]
    for file, name in sorted(names.tests):
        if (ROOT / file).is_file() and name not in functions_in(ROOT / file):
            found.append(f"no test {name} in {file}")
    found += [f"no file {f}" for f in sorted(names.files) if not (ROOT / f).exists()]
    fields = {name.upper() for name in Settings.model_fields}
    found += [f"no setting {s}" for s in sorted(names.settings - fields)]
    return found


def test_everything_the_checklist_names_exists(tmp_path: Path) -> None:
    text = CHECKLIST.read_text()
    names = names_in(text)
    # The parser found what the checklist is made of; an empty parse would prove nothing.
    assert len(names.endpoints) >= 10
    assert {"test", "smoke", "bench", "run", "lint"} <= names.targets
    assert len(names.tests) >= 30
    assert len(names.files) >= 15
    assert {"MAX_WORKERS", "LOG_FORMAT", "METRICS_TOKEN"} <= names.settings
    with make_client(Settings(storage_dir=tmp_path / "storage")) as client:
        assert problems(text, client) == []


def test_the_check_reports_each_kind_of_thing_that_is_gone(tmp_path: Path) -> None:
    stale = """
    - `GET /api/v1/video/status/{session_id}` exists;
      `GET /api/v1/video/state/{session_id}` does not.
    - `POST /api/v1/video/status/{session_id}` is the wrong method; `GET /api/v1/video/status/{id}`
      the wrong placeholder.
    - `make smoke URL=https://example.com` exists, `make deploy` does not.
    - `tests/test_api.py::test_unknown_session_is_404` exists,
      `tests/test_api.py::test_unknown_session_is_410` does not, nor `tests/test_gone.py::test_x`.
    - `session_manager.py` and `analysis/` exist, `sessions.py` does not.
    - `MAX_WORKERS` is a setting, `MAX_THREADS` is not.
    """
    with make_client(Settings(storage_dir=tmp_path / "storage")) as client:
        assert problems(stale, client) == [
            "no route answers GET /api/v1/video/state/{session_id}",
            "no route answers GET /api/v1/video/status/{id}",
            "no route answers POST /api/v1/video/status/{session_id}",
            "no make target deploy",
            "no test test_unknown_session_is_410 in tests/test_api.py",
            "no file sessions.py",
            "no file tests/test_gone.py",
            "no setting MAX_THREADS",
        ]
