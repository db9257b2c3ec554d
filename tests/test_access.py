"""Access: the API key, the signed URLs a browser's `<img>`, `<video>` and EventSource use instead
of the header, private caching under a key, CORS, and raw path-traversal attempts on the files
the server serves."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from config import Settings
from signing import EVENTS, UrlSigner
from tests.conftest import API, make_client, upload, wait_for
from tests.raw_http import get
from tests.server import Server, free_port, launch

KEY = "s3cret-key"
HEADER = {"X-API-Key": KEY}


# -- the key itself ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["API_KEY", "URL_SIGNING_SECRET"])
@pytest.mark.parametrize("value", ["", "   "])
def test_a_key_set_but_blank_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=f"{name} is set but empty"):
        Settings()


def test_a_server_with_a_blank_api_key_does_not_start(tmp_path: Path) -> None:
    # Today's behaviour before the check: the key was ignored and the API was open to anyone.
    log = tmp_path / "server.log"
    env = {**os.environ, "STORAGE_DIR": str(tmp_path / "s"), "API_KEY": " "}
    with open(log, "wb") as out:
        process = launch(free_port(), env, out)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            pytest.fail(f"the server started with a blank API_KEY: {log.read_text()[-1000:]}")
    assert code != 0
    assert "API_KEY is set but empty" in log.read_text()


# -- signed URLs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    storage = tmp_path_factory.mktemp("keyed") / "storage"
    settings = Settings(storage_dir=storage, api_key=KEY, signed_url_seconds=600)
    with make_client(settings) as client:
        client.headers.update(HEADER)
        yield client


@pytest.fixture(scope="module")
def completed(keyed: TestClient, clips: dict[str, Path]) -> str:
    """A completed session with thumbnails and a reel."""
    answer = upload(keyed, clips["reps"], analysis_type="highlights", params='{"reel": true}')
    session_id = answer.json()["sessionId"]
    assert wait_for(keyed, session_id)["status"] == "completed"
    return session_id


def anonymous(client: TestClient, url: str) -> httpx.Response:
    """GET as a browser's <img> would: without the X-API-Key header."""
    return client.get(url, headers={"X-API-Key": ""})  # "" counts as no key


def signer(client: TestClient) -> UrlSigner:
    return client.app.state.signer  # type: ignore[attr-defined]


def test_results_carry_signed_artifact_urls_that_open_without_the_header(
    keyed: TestClient, completed: str
) -> None:
    before = time.time()
    data = keyed.get(f"{API}/results/{completed}").json()["data"]
    urls = [h["thumbnail_url"] for h in data["highlights"]] + [data["reel_url"]]
    assert len(urls) >= 2
    for url in urls:
        path, query = urlsplit(url).path, parse_qs(urlsplit(url).query)
        assert path.startswith(f"{API}/artifacts/{completed}/")
        assert set(query) == {"expires", "token"}
        assert int(before) + 600 <= int(query["expires"][0]) <= time.time() + 600
        assert len(query["token"][0]) == 64
        assert anonymous(keyed, path).status_code == 401  # the bare path needs the key
        response = anonymous(keyed, url)
        assert response.status_code == 200, response.text
        assert response.content[:3] == b"\xff\xd8\xff" or response.content[4:8] == b"ftyp"
    # The stored result keeps plain URLs: each answer signs them afresh.
    session = keyed.app.state.sessions.get_session(completed)  # type: ignore[attr-defined]
    assert "token" not in session.result["reel_url"]
    assert all("?" not in h["thumbnail_url"] for h in session.result["highlights"])


def test_an_altered_or_expired_signed_url_is_403(keyed: TestClient, completed: str) -> None:
    thumbnail = keyed.get(f"{API}/results/{completed}").json()["data"]["highlights"][0]
    path = urlsplit(thumbnail["thumbnail_url"]).path
    name = path.rsplit("/", 1)[1]
    query = parse_qs(urlsplit(thumbnail["thumbnail_url"]).query)
    expires, token = query["expires"][0], query["token"][0]
    flipped = ("0" if token[0] != "0" else "1") + token[1:]
    other_path = f"{API}/artifacts/{completed}/highlight_reel.mp4"
    past = signer(keyed).sign(path, completed, name, now=time.time() - 601)
    cases = {
        "altered token": f"{path}?expires={expires}&token={flipped}",
        "later expiry": f"{path}?expires={int(expires) + 1}&token={token}",
        "another file": f"{other_path}?expires={expires}&token={token}",
        "events with an artifact's token": f"{API}/events/{completed}?expires={expires}"
        f"&token={token}",
        "expired": past,
        "no token": f"{path}?expires={expires}",
        "no expiry": f"{path}?token={token}",
        "expiry not a number": f"{path}?expires=soon&token={token}",
        "expiry in other digits": f"{path}?expires=%C2%B2&token={token}",
    }
    for case, url in cases.items():
        response = anonymous(keyed, url)
        assert response.status_code == 403, (case, response.text)
        detail = response.json()["detail"]
        assert isinstance(detail, str) and detail.startswith("This link"), (case, detail)
    assert "expired" in anonymous(keyed, past).json()["detail"]


def test_the_header_still_opens_the_signed_routes(keyed: TestClient, completed: str) -> None:
    data = keyed.get(f"{API}/results/{completed}").json()["data"]
    path = urlsplit(data["reel_url"]).path
    assert keyed.get(path).status_code == 200
    # The right key wins over a wrong token; a wrong key with no token is a 401.
    assert keyed.get(f"{path}?expires=1&token=00").status_code == 200
    assert keyed.get(path, headers={"X-API-Key": "wrong"}).status_code == 401


def test_the_upload_answer_carries_an_events_url_an_event_source_can_open(
    keyed: TestClient, clips: dict[str, Path]
) -> None:
    answer = upload(keyed, clips["short"]).json()
    session_id, events_url = answer["sessionId"], answer["eventsUrl"]
    assert urlsplit(events_url).path == f"{API}/events/{session_id}"
    assert set(parse_qs(urlsplit(events_url).query)) == {"expires", "token"}
    assert anonymous(keyed, f"{API}/events/{session_id}").status_code == 401
    # EventSource sends no header: the signed URL alone opens the stream, to its end.
    with keyed.stream("GET", events_url, headers={"X-API-Key": ""}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    assert '"status":"completed"' in lines[-1]


def test_replicas_sharing_the_key_accept_each_others_urls(tmp_path: Path) -> None:
    one = UrlSigner.from_settings(Settings(storage_dir=tmp_path / "a", api_key=KEY))
    two = UrlSigner.from_settings(Settings(storage_dir=tmp_path / "b", api_key=KEY))
    other = UrlSigner.from_settings(Settings(storage_dir=tmp_path, api_key="another-key"))
    chosen = UrlSigner.from_settings(
        Settings(storage_dir=tmp_path, api_key=KEY, url_signing_secret="shared-secret")
    )
    assert one is not None and two is not None and other is not None and chosen is not None
    token = one.token("session", EVENTS, 2_000_000_000)
    assert two.token("session", EVENTS, 2_000_000_000) == token
    assert other.token("session", EVENTS, 2_000_000_000) != token
    assert chosen.token("session", EVENTS, 2_000_000_000) != token
    # The secret is not the key itself, and never shows in a repr.
    assert one.secret != KEY.encode() and KEY not in repr(one) and "secret" not in repr(chosen)
    assert UrlSigner.from_settings(Settings(storage_dir=tmp_path)) is None


# -- caching and CORS ----------------------------------------------------------------------------


def test_answers_under_a_key_are_private_to_the_browser(keyed: TestClient, completed: str) -> None:
    data = keyed.get(f"{API}/results/{completed}").json()["data"]
    checks = {
        "results": keyed.get(f"{API}/results/{completed}"),
        "status": keyed.get(f"{API}/status/{completed}"),
        "an error": keyed.get(f"{API}/status/unknown"),
        "a refusal": keyed.get(f"{API}/status/unknown", headers={"X-API-Key": ""}),
        "an artifact": anonymous(keyed, data["reel_url"]),
    }
    for what, response in checks.items():
        assert response.headers["cache-control"].startswith("private"), what
    assert checks["an artifact"].headers["cache-control"] == "private, max-age=3600"
    assert "cache-control" not in keyed.get("/health").headers


def test_without_a_key_artifacts_stay_cacheable_by_anyone(
    client: TestClient, clips: dict[str, Path]
) -> None:
    session_id = upload(client, clips["short"]).json()["sessionId"]
    wait_for(client, session_id)
    thumbnail = client.get(f"{API}/results/{session_id}").json()["data"]["highlights"][0]
    assert "?" not in thumbnail["thumbnail_url"]
    assert client.get(thumbnail["thumbnail_url"]).headers["cache-control"] == "max-age=3600"


def test_cors_clients_can_read_retry_after(tmp_path: Path, clips: dict[str, Path]) -> None:
    settings = Settings(
        storage_dir=tmp_path / "storage",
        cors_origins=["https://app.example"],
        max_queued=0,
        max_workers=1,
    )
    origin = {"Origin": "https://app.example"}
    with make_client(settings) as client:
        busy = upload(client, clips["long"]).json()["sessionId"]
        with open(clips["short"], "rb") as f:
            refused = client.post(f"{API}/upload", files={"video": f}, headers=origin)
        assert refused.status_code == 429
        assert "retry-after" in refused.headers
        exposed = refused.headers["access-control-expose-headers"].lower().split(",")
        assert "retry-after" in [name.strip() for name in exposed]
        client.post(f"{API}/cancel/{busy}")


# -- path traversal, sent raw --------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, clips: dict[str, Path]) -> Iterator[tuple]:
    """A real server (no key) with one completed session; (server, session id, a thumbnail)."""
    folder = tmp_path_factory.mktemp("traversal")
    server = Server(folder / "storage", folder / "server.log")
    server.env.pop("API_KEY", None)
    server.start()
    try:
        with open(clips["short"], "rb") as f:
            answer = httpx.post(f"{server.url}{API}/upload", files={"video": f}, timeout=30)
        session_id = answer.json()["sessionId"]
        wait_for(server, session_id, {"completed"})
        results = httpx.get(f"{server.url}{API}/results/{session_id}").json()
        yield server, session_id, results["data"]["highlights"][0]["thumbnail_url"]
    finally:
        server.stop()


# Lines of files a traversal would reach: the service's code, its database, the system's.
SECRETS = [b"def create_app", b"class Settings", b"SQLite format 3", b"root:x:0:0"]
ARTIFACT = API + "/artifacts/{id}/"
TRAVERSALS = [
    ARTIFACT + "../../app.py",
    ARTIFACT + "../../../../app.py",
    ARTIFACT + "..%2f..%2f..%2f..%2fapp.py",
    ARTIFACT + "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fapp.py",
    ARTIFACT + "%2E%2E%2F%2E%2E%2Fconfig.py",
    ARTIFACT + "..%5c..%5c..%5c..%5capp.py",
    ARTIFACT + "..\\..\\..\\..\\app.py",
    ARTIFACT + "%2fetc%2fpasswd",
    ARTIFACT + "/etc/passwd",
    ARTIFACT + "..%2fsessions.sqlite3",
    ARTIFACT + "%2e%2e/sessions.sqlite3",
    ARTIFACT + "highlight_1.jpg%00.py",
    ARTIFACT + "..%00/app.py",
    API + "/artifacts/../../../app.py",
    API + "/artifacts/..%2f..%2f../app.py",
    API + "/artifacts/%2e%2e/app.py",
    API + "/artifacts/%2e%2e/sessions.sqlite3",
    API + "/artifacts/{id}%2f..%2f..%2f..%2f..%2f/app.py",
    "/static/../app.py",
    "/static/..%2fapp.py",
    "/static/%2e%2e%2fconfig.py",
    "/static/..%5capp.py",
    "/static//etc/passwd",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_raw_traversal_paths_never_serve_a_file(served: tuple, target: str) -> None:
    server, session_id, _ = served
    answer = get(server.port, target.replace("{id}", session_id))
    assert answer.status in (400, 403, 404), answer
    assert not any(secret in answer.body for secret in SECRETS), answer.body[:200]
    if answer.status == 404:
        assert answer.json()["detail"] in {"Artifact not found", "Not Found", "Session not found"}


def test_a_raw_nul_byte_in_the_request_line_is_refused(served: tuple) -> None:
    server, session_id, _ = served
    answer = get(server.port, f"{API}/artifacts/{session_id}/highlight_1.jpg\x00/../../app.py")
    assert answer.status == 400, answer
    assert not any(secret in answer.body for secret in SECRETS)


def test_the_raw_requests_reach_the_artifact_route(served: tuple) -> None:
    """The control: the same raw GET of a real artifact serves it, so the 404s above are the
    route's own checks, not a request that never arrived."""
    server, session_id, thumbnail = served
    answer = get(server.port, thumbnail)
    assert answer.status == 200 and answer.body[:3] == b"\xff\xd8\xff"
    # A name the route receives whole (a backslash is no separator to it), and refuses.
    near = get(server.port, f"{API}/artifacts/{session_id}/..%5chighlight_1.jpg")
    assert near.status == 404 and near.json() == {"detail": "Artifact not found"}
