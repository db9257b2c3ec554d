"""GET /metrics: Prometheus text, parsed with prometheus_client's own parser, whose series move
with what the service does, which never names a session or a path, and which only the API key
or METRICS_TOKEN may read when either is set."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from config import Settings
from observability import rejection_reason
from tests.conftest import API, make_client, upload, wait_for
from uploads import StorageFull, UploadTooLarge
from video_service import QueueFull, ServiceError

STATUS_ROUTE = "/api/v1/video/status/{session_id}"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient, **headers: str) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def finish(client: TestClient, session_id: str) -> None:
    """Wait until the analysis's worker has returned: its metrics are recorded by then."""
    assert client.app.state.tasks.wait(session_id, timeout=60)  # type: ignore[attr-defined]


def test_a_completed_upload_moves_uploads_analyses_and_request_latency(
    client: TestClient, clips: dict[str, Path]
) -> None:
    before = scrape(client)
    assert value(before, "video_uploads_total", analysis_type="full") == 0
    response = upload(client, clips["short"], analysis_type="full")
    assert response.status_code == 202
    session_id = response.json()["sessionId"]
    finish(client, session_id)
    for _ in range(3):
        assert client.get(f"{API}/status/{session_id}").json()["status"] == "completed"

    after = scrape(client)
    assert value(after, "video_uploads_total", analysis_type="full") == 1
    assert value(after, "video_upload_bytes_total") == clips["short"].stat().st_size
    assert value(after, "video_analyses_total", analysis_type="full", outcome="completed") == 1
    duration = ("video_analysis_duration_seconds_count", "full", "completed")
    assert value(after, duration[0], analysis_type=duration[1], outcome=duration[2]) == 1
    assert value(after, "video_analysis_realtime_factor_count", analysis_type="full") == 1
    assert value(after, "video_analysis_realtime_factor_sum", analysis_type="full") > 1
    # Request latency is counted by route template and status, never by raw path.
    polls = value(
        after, "http_request_duration_seconds_count", method="GET", route=STATUS_ROUTE, status="200"
    )
    assert polls == 3
    upload_route = {"method": "POST", "route": f"{API}/upload", "status": "202"}
    assert value(after, "http_request_duration_seconds_count", **upload_route) == 1
    assert value(before, "http_request_duration_seconds_count", **upload_route) == 0
    # The state read at scrape time.
    assert value(after, "video_sessions", status="completed") == 1
    assert value(after, "video_queue_depth") == 0
    assert value(after, "video_workers_running") == 0
    assert value(after, "video_workers") == 2
    assert value(after, "video_queue_capacity") == 20
    assert value(after, "video_storage_used_bytes") > 0
    assert value(after, "process_resident_memory_bytes") > 0


def test_the_metrics_never_name_a_session_a_path_or_a_raw_url(
    client: TestClient, clips: dict[str, Path], settings: Settings
) -> None:
    session_id = upload(client, clips["short"], analysis_type="full").json()["sessionId"]
    wait_for(client, session_id)
    thumbnail = client.get(f"{API}/results/{session_id}").json()["data"]["highlights"][0]
    assert client.get(thumbnail["thumbnail_url"]).status_code == 200
    stray = f"/no/such/{uuid.uuid4()}"
    assert client.get(stray).status_code == 404
    assert client.get(f"{API}/status/{uuid.uuid4()}").status_code == 404
    text = client.get("/metrics").text
    assert session_id not in text
    assert "highlight_1.jpg" not in text
    assert stray not in text
    assert str(Path(settings.storage_dir).resolve()) not in text
    assert str(Path(settings.storage_dir)) not in text
    routes = {
        s.labels["route"]
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if "route" in s.labels
    }
    assert routes == {
        f"{API}/upload",
        STATUS_ROUTE,
        f"{API}/results/{{session_id}}",
        f"{API}/artifacts/{{session_id}}/{{name}}",
        "unmatched",
    }


def test_refused_uploads_are_counted_by_reason_and_a_new_app_starts_at_zero(
    settings: Settings, tmp_path: Path, clips: dict[str, Path]
) -> None:
    text = tmp_path / "notes.mp4"
    text.write_bytes(b"Not a video.\n" * 100)
    data = clips["short"].read_bytes()
    truncated = tmp_path / "half.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    with make_client(settings) as client:
        assert upload(client, text).status_code == 415
        assert upload(client, truncated).status_code == 422
        assert upload(client, clips["short"], analysis_type="yoga").status_code == 422
        samples = scrape(client)
    assert value(samples, "video_upload_rejections_total", reason="unsupported") == 1
    assert value(samples, "video_upload_rejections_total", reason="invalid") == 2
    assert value(samples, "video_uploads_total", analysis_type="highlights") == 0
    assert value(samples, "video_upload_bytes_total") == 0
    with make_client(settings) as client:
        fresh = scrape(client)
    assert value(fresh, "video_upload_rejections_total", reason="unsupported") == 0


def test_a_cancelled_analysis_is_counted_as_cancelled_without_a_realtime_factor(
    client: TestClient, clips: dict[str, Path]
) -> None:
    session_id = upload(client, clips["long"], analysis_type="workout").json()["sessionId"]
    wait_for(client, session_id, {"processing"})
    assert client.post(f"{API}/cancel/{session_id}").status_code == 200
    finish(client, session_id)
    samples = scrape(client)
    assert value(samples, "video_analyses_total", analysis_type="workout", outcome="cancelled") == 1
    assert value(samples, "video_analyses_total", analysis_type="workout", outcome="completed") == 0
    assert value(samples, "video_analysis_realtime_factor_count", analysis_type="workout") == 0
    assert value(samples, "video_sessions", status="cancelled") == 1


@pytest.mark.parametrize(
    ("api_key", "token", "headers", "expected"),
    [
        (None, None, {}, 200),
        ("the-key", None, {}, 401),
        ("the-key", None, {"X-API-Key": "the-key"}, 200),
        ("the-key", None, {"X-API-Key": "wrong"}, 401),
        ("the-key", None, {"Authorization": "Bearer the-key"}, 401),
        (None, "the-token", {}, 401),
        (None, "the-token", {"Authorization": "Bearer the-token"}, 200),
        (None, "the-token", {"Authorization": "bearer the-token"}, 200),
        (None, "the-token", {"Authorization": "Bearer wrong"}, 401),
        (None, "the-token", {"X-API-Key": "the-token"}, 401),
        ("the-key", "the-token", {"X-API-Key": "the-key"}, 200),
        ("the-key", "the-token", {"Authorization": "Bearer the-token"}, 200),
        ("the-key", "the-token", {"Authorization": "Bearer the-key"}, 401),
    ],
)
def test_metrics_are_guarded_by_the_api_key_or_the_metrics_token(
    tmp_path: Path, api_key: str | None, token: str | None, headers: dict[str, str], expected: int
) -> None:
    settings = Settings(storage_dir=tmp_path / "storage", api_key=api_key, metrics_token=token)
    with make_client(settings) as client:
        response = client.get("/metrics", headers=headers)
    assert response.status_code == expected
    if expected == 401:
        assert response.json() == {"detail": "Invalid or missing credentials for /metrics"}
        assert "video_" not in response.text
        if token is not None:
            assert response.headers["www-authenticate"] == "Bearer"


def test_an_empty_metrics_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_TOKEN", " ")
    with pytest.raises(ValueError, match="METRICS_TOKEN is set but empty"):
        Settings()


class UploadsStalled(ServiceError):
    """A refusal the reason table does not name (as a later issue may add)."""


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (UploadTooLarge("too big"), "too_large"),
        (QueueFull(retry_after=10), "queue_full"),
        (StorageFull("full"), "disk_full"),
        (UploadsStalled("stalled"), "uploads_stalled"),
        (RuntimeError("a bug"), "error"),
    ],
)
def test_each_refusal_has_a_bounded_reason(error: Exception, reason: str) -> None:
    assert rejection_reason(error) == reason
