"""The /api/v1 video API end to end, on real clips: every row of the contract's table.

Every test runs twice: against the one-process service (threads, SQLite, a folder) and against
the distributed one (an in-process API over Redis and an S3 server, the analyses in a real RQ
worker process). Clients must not be able to tell them apart."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from config import Settings
from tests.conftest import (
    API,
    follow,
    join_all,
    make_client,
    remove_stored,
    running_and_queued,
    stored_files,
    upload,
    wait_for,
)


@pytest.fixture(params=["threads", "rq"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- the happy path ------------------------------------------------------------------------------


def test_upload_answers_202_with_a_queued_session(
    client: TestClient, clips: dict[str, Path]
) -> None:
    response = upload(client, clips["short"])
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"sessionId", "status", "message", "eventsUrl"}
    assert body["status"] == "queued"
    assert body["message"] == "Video uploaded successfully"
    assert len(body["sessionId"]) == 36
    # Without an API key the stream's URL is a plain path (see test_access.py for a signed one).
    assert body["eventsUrl"] == f"{API}/events/{body['sessionId']}"


def test_upload_then_status_then_results_of_a_full_analysis(
    client: TestClient, clips: dict[str, Path], settings: Settings
) -> None:
    session_id = upload(client, clips["reps"], analysis_type="full").json()["sessionId"]
    seen = follow(client, session_id, lambda body: body["status"] in ("completed", "failed"))
    final = seen[-1]
    assert final["status"] == "completed", final
    assert final["progress"] == 100
    assert final["analysisType"] == "full"
    assert {"sessionId", "message", "createdAt", "updatedAt"} <= set(final)
    assert "error" not in final and "queuePosition" not in final
    progresses = [s["progress"] for s in seen]
    assert progresses == sorted(progresses), "progress went backwards"

    results = client.get(f"{API}/results/{session_id}")
    assert results.status_code == 200
    body = results.json()
    assert body["sessionId"] == session_id and body["status"] == "completed"
    data = body["data"]
    assert data["analysis_type"] == "full"
    assert data["video"] == {
        "duration": pytest.approx(8.0, abs=0.1),
        "fps": pytest.approx(30.0),
        "width": 320,
        "height": 240,
        "frame_count": 240,
    }
    assert data["processing_time"] > 0
    # The block bobs once a second for 8 s: one set of about 8 repetitions.
    workout = data["workout"]
    assert abs(workout["total_reps"] - 8) <= 1
    active = [s for s in workout["segments"] if s["kind"] == "active"]
    assert len(active) == 1
    assert active[0]["reps"] == len(active[0]["rep_times"])
    assert active[0]["tempo"] == pytest.approx(60, rel=0.15)
    times = active[0]["rep_times"]
    assert times == sorted(times) and all(0 <= t <= 8 for t in times)

    highlights = data["highlights"]
    assert 1 <= len(highlights) <= 5
    for h in highlights:
        assert 0 <= h["start"] < h["end"] <= 8.01
        assert 0 <= h["score"] <= 1
        assert h["reason"]
        thumbnail = client.get(h["thumbnail_url"])
        assert thumbnail.status_code == 200
        assert thumbnail.headers["content-type"] == "image/jpeg"
        assert thumbnail.content[:3] == b"\xff\xd8\xff"
    # The uploaded video is not kept once its results are: only the artifacts remain.
    assert all(p.suffix == ".jpg" for p in stored_files(settings))


@pytest.mark.parametrize(
    ("analysis_type", "present", "absent"),
    [("highlights", "highlights", "workout"), ("workout", "workout", "highlights")],
)
def test_results_carry_only_what_the_analysis_type_asks_for(
    client: TestClient, clips: dict[str, Path], analysis_type: str, present: str, absent: str
) -> None:
    session_id = upload(client, clips["short"], analysis_type=analysis_type).json()["sessionId"]
    assert wait_for(client, session_id)["status"] == "completed"
    data = client.get(f"{API}/results/{session_id}").json()["data"]
    assert data["analysis_type"] == analysis_type
    assert present in data and absent not in data


def test_analysis_type_defaults_to_highlights(client: TestClient, clips: dict[str, Path]) -> None:
    session_id = upload(client, clips["short"]).json()["sessionId"]
    wait_for(client, session_id)
    assert client.get(f"{API}/status/{session_id}").json()["analysisType"] == "highlights"


def test_params_reach_the_analysis(client: TestClient, clips: dict[str, Path]) -> None:
    params = json.dumps({"max_highlights": 1, "highlight_seconds": 2})
    session_id = upload(client, clips["reps"], params=params).json()["sessionId"]
    assert wait_for(client, session_id)["status"] == "completed"
    highlights = client.get(f"{API}/results/{session_id}").json()["data"]["highlights"]
    assert len(highlights) == 1
    assert highlights[0]["end"] - highlights[0]["start"] == pytest.approx(2, abs=0.2)


def test_progress_is_reported_per_segment(client: TestClient, clips: dict[str, Path]) -> None:
    session_id = upload(client, clips["long"], params='{"segment_seconds": 10}').json()["sessionId"]
    seen = follow(client, session_id, lambda body: body["status"] == "completed")
    messages = {body["message"] for body in seen}
    segment_messages = [m for m in messages if m.startswith("Analyzing segment ")]
    assert len(segment_messages) >= 3, messages
    assert all(m.endswith("/12") for m in segment_messages), segment_messages


def test_three_concurrent_uploads_all_complete(
    client: TestClient, clips: dict[str, Path], settings: Settings
) -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def send(kind: str) -> None:
        response = upload(client, clips["reps"], analysis_type=kind)
        assert response.status_code == 202
        with lock:
            ids.append(response.json()["sessionId"])

    threads = [threading.Thread(target=send, args=(k,)) for k in ("highlights", "workout", "full")]
    for t in threads:
        t.start()
    join_all(threads)
    assert len(set(ids)) == 3
    for session_id in ids:
        assert wait_for(client, session_id)["status"] == "completed"
        assert client.get(f"{API}/results/{session_id}").status_code == 200


# -- cancel --------------------------------------------------------------------------------------


def test_cancel_mid_processing_stops_work_frees_the_worker_and_removes_files(
    make_settings: Callable[..., Settings], clips: dict[str, Path]
) -> None:
    settings = make_settings(max_workers=1)
    with make_client(settings) as client:
        session_id = upload(client, clips["long"]).json()["sessionId"]
        # Well into the analysis.
        follow(client, session_id, lambda b: b["status"] == "processing" and b["progress"] >= 5)
        started = time.monotonic()
        response = client.post(f"{API}/cancel/{session_id}")
        assert response.status_code == 200
        assert response.json() == {
            "sessionId": session_id,
            "status": "cancelled",
            "message": "Processing cancelled successfully",
        }
        tasks = client.app.state.tasks  # type: ignore[attr-defined]
        while tasks.counts()["running"]:
            assert time.monotonic() - started < 1.0, "the worker was not freed within 1 s"
            time.sleep(0.01)
        status = client.get(f"{API}/status/{session_id}").json()
        assert status["status"] == "cancelled"
        assert stored_files(settings) == []
        results = client.get(f"{API}/results/{session_id}")
        assert results.status_code == 400 and "cancelled" in results.json()["detail"]
        # The one worker takes the next video straight away.
        next_id = upload(client, clips["short"]).json()["sessionId"]
        assert wait_for(client, next_id, timeout=10)["status"] == "completed"


def test_cancel_of_a_queued_session_drops_it(
    make_settings: Callable[..., Settings], clips: dict[str, Path]
) -> None:
    settings = make_settings(max_workers=1)
    with make_client(settings) as client:
        running = upload(client, clips["long"]).json()["sessionId"]
        wait_for(client, running, {"processing"})
        queued = upload(client, clips["short"]).json()["sessionId"]
        status = client.get(f"{API}/status/{queued}").json()
        assert status["status"] == "queued" and status["queuePosition"] == 1
        assert client.post(f"{API}/cancel/{queued}").status_code == 200
        assert client.get(f"{API}/status/{queued}").json()["status"] == "cancelled"
        assert not (Path(settings.storage_dir) / queued).exists()
        client.post(f"{API}/cancel/{running}")
        assert wait_for(client, running)["status"] == "cancelled"


def test_cancel_of_an_ended_session_is_409(client: TestClient, clips: dict[str, Path]) -> None:
    session_id = upload(client, clips["short"]).json()["sessionId"]
    wait_for(client, session_id)
    response = client.post(f"{API}/cancel/{session_id}")
    assert response.status_code == 409
    assert "completed" in response.json()["detail"]
    # Results of a completed session survive a refused cancel.
    assert client.get(f"{API}/results/{session_id}").status_code == 200


def test_cancel_twice_is_409_the_second_time(client: TestClient, clips: dict[str, Path]) -> None:
    session_id = upload(client, clips["long"]).json()["sessionId"]
    assert client.post(f"{API}/cancel/{session_id}").status_code == 200
    second = client.post(f"{API}/cancel/{session_id}")
    assert second.status_code == 409 and "cancelled" in second.json()["detail"]


# -- cleanup -------------------------------------------------------------------------------------


def test_cleanup_after_completion_removes_every_trace(
    client: TestClient, clips: dict[str, Path], settings: Settings
) -> None:
    session_id = upload(client, clips["reps"], analysis_type="full").json()["sessionId"]
    wait_for(client, session_id)
    thumbnail = client.get(f"{API}/results/{session_id}").json()["data"]["highlights"][0]
    assert stored_files(settings)
    response = client.delete(f"{API}/cleanup/{session_id}")
    assert response.status_code == 200
    assert response.json() == {"message": "Session cleaned up successfully"}
    assert stored_files(settings) == []
    assert not (Path(settings.storage_dir) / session_id).exists()
    assert client.get(f"{API}/status/{session_id}").status_code == 404
    assert client.get(f"{API}/results/{session_id}").status_code == 404
    assert client.get(thumbnail["thumbnail_url"]).status_code == 404
    assert client.delete(f"{API}/cleanup/{session_id}").status_code == 404


def test_cleanup_of_a_running_session_stops_it(
    client: TestClient, clips: dict[str, Path], settings: Settings
) -> None:
    session_id = upload(client, clips["long"]).json()["sessionId"]
    wait_for(client, session_id, {"processing"})
    assert client.delete(f"{API}/cleanup/{session_id}").status_code == 200
    assert client.app.state.tasks.counts()["running"] == 0  # type: ignore[attr-defined]
    assert stored_files(settings) == []
    assert client.get(f"{API}/status/{session_id}").status_code == 404


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/status/{id}"),
        ("get", "/results/{id}"),
        ("post", "/cancel/{id}"),
        ("delete", "/cleanup/{id}"),
    ],
)
@pytest.mark.parametrize("session_id", ["2f0c6d1e-8a53-4b9e-9d55-0c1f3f0b7a11", "not-a-uuid"])
def test_unknown_session_is_404(
    client: TestClient, method: str, path: str, session_id: str
) -> None:
    response = getattr(client, method)(API + path.format(id=session_id))
    assert response.status_code == 404
    assert response.json() == {"detail": "Session not found"}


def test_results_while_not_completed_are_400_with_the_status(
    make_settings: Callable[..., Settings], clips: dict[str, Path]
) -> None:
    settings = make_settings(max_workers=1)
    with make_client(settings) as client:
        running, queued = running_and_queued(client, clips)
        for session_id, status in ((running, "processing"), (queued, "queued")):
            response = client.get(f"{API}/results/{session_id}")
            assert response.status_code == 400
            assert status in response.json()["detail"]


def test_too_large_upload_is_413_and_leaves_nothing(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(max_upload_mb=1)
    big = tmp_path / "big.mp4"
    # A real MP4 header followed by 3 MB: refused while streaming, before the end.
    big.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * (3 * 1024 * 1024))
    with make_client(settings) as client:
        response = upload(client, big)
        assert response.status_code == 413
        assert "1 MB" in response.json()["detail"]
        assert stored_files(settings) == []


@pytest.mark.parametrize(
    ("content", "name"),
    [
        (b"just some text, certainly not a video\n" * 20, "notes.mp4"),
        (b"%PDF-1.7\n" + b"0" * 500, "paper.mp4"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 500, "image.png"),
    ],
)
def test_a_file_that_is_not_a_video_is_415(
    client: TestClient, settings: Settings, tmp_path: Path, content: bytes, name: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    response = upload(client, path)
    assert response.status_code == 415
    assert "Unsupported file type" in response.json()["detail"]
    assert stored_files(settings) == []


def test_a_truncated_video_is_422(
    client: TestClient, clips: dict[str, Path], settings: Settings, tmp_path: Path
) -> None:
    data = clips["short"].read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    response = upload(client, half)
    assert response.status_code == 422
    assert "not a readable video" in response.json()["detail"]
    assert stored_files(settings) == []


def test_an_empty_file_is_422(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    response = upload(client, empty)
    assert response.status_code == 422
    assert "empty" in response.json()["detail"]
    assert stored_files(settings) == []


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"analysis_type": "yoga"}, "analysis_type must be one of"),
        ({"params": "{not json"}, "params must be a JSON object"),
        ({"params": "[1, 2]"}, "params must be a JSON object"),
        ({"params": '"text"'}, "params must be a JSON object"),
        ({"params": '{"colour": "red"}'}, "unknown key 'colour'"),
        ({"params": '{"max_highlights": 0}'}, "max_highlights"),
        ({"params": '{"sample_fps": 1000}'}, "sample_fps"),
        ({"params": '{"reel": "maybe"}'}, "reel"),
    ],
)
def test_bad_form_fields_are_422_and_leave_nothing(
    client: TestClient,
    clips: dict[str, Path],
    settings: Settings,
    form: dict[str, str],
    expected: str,
) -> None:
    response = upload(client, clips["short"], **form)
    assert response.status_code == 422
    assert expected in response.json()["detail"]
    assert stored_files(settings) == []
    assert len(client.app.state.sessions) == 0  # type: ignore[attr-defined]


def test_missing_video_field_is_422(client: TestClient, clips: dict[str, Path]) -> None:
    with open(clips["short"], "rb") as f:
        response = client.post(f"{API}/upload", files={"file": ("a.mp4", f)})
    assert response.status_code == 422
    no_file = client.post(f"{API}/upload", data={"analysis_type": "workout"})
    assert no_file.status_code == 422
    assert "video" in no_file.json()["detail"]


def test_a_real_video_with_a_misleading_name_and_type_is_accepted(
    client: TestClient, clips: dict[str, Path]
) -> None:
    with open(clips["short"], "rb") as f:
        response = client.post(
            f"{API}/upload", files={"video": ("../../etc/passwd\x00.txt", f, "text/plain")}
        )
    assert response.status_code == 202
    session_id = response.json()["sessionId"]
    assert wait_for(client, session_id)["status"] == "completed"


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "..%2F..%2Fconfig.py", "video.mp4", "highlight_9.jpg", ".."]
)
def test_artifacts_serve_only_what_the_session_produced(
    client: TestClient, clips: dict[str, Path], name: str
) -> None:
    session_id = upload(client, clips["short"]).json()["sessionId"]
    wait_for(client, session_id)
    response = client.get(f"{API}/artifacts/{session_id}/{name}")
    assert response.status_code == 404
    assert response.json()["detail"] in {"Artifact not found", "Not Found"}


# -- the synchronous endpoints and health ----------------------------------------------------------


def test_synchronous_workout_analysis_answers_the_data(
    client: TestClient, clips: dict[str, Path], settings: Settings
) -> None:
    with open(clips["reps"], "rb") as f:
        response = client.post("/analyze/workout", files={"video": ("w.mp4", f)})
    assert response.status_code == 200
    data = response.json()
    assert data["analysis_type"] == "workout"
    assert abs(data["workout"]["total_reps"] - 8) <= 1
    assert "highlights" not in data
    assert stored_files(settings) == []


def test_synchronous_highlights_analysis_answers_the_data(
    client: TestClient, clips: dict[str, Path], settings: Settings
) -> None:
    with open(clips["reps"], "rb") as f:
        response = client.post("/analyze/highlights", files={"video": ("w.mp4", f)})
    assert response.status_code == 200
    data = response.json()
    assert data["analysis_type"] == "highlights"
    assert data["highlights"] and "workout" not in data
    assert stored_files(settings) == []


def test_synchronous_endpoint_refuses_a_non_video(client: TestClient, tmp_path: Path) -> None:
    path = tmp_path / "x.mp4"
    path.write_bytes(b"hello" * 100)
    with open(path, "rb") as f:
        assert client.post("/analyze/workout", files={"video": f}).status_code == 415


def test_health_reports_the_load(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "running": 0, "queued": 0, "sessions": 0}


# -- artifacts that vanish, and the documented error bodies ----------------------------------------


def test_an_artifact_removed_from_disk_is_404_not_500(
    client: TestClient, clips: dict[str, Path], settings: Settings
) -> None:
    session_id = upload(client, clips["short"]).json()["sessionId"]
    wait_for(client, session_id)
    url = client.get(f"{API}/results/{session_id}").json()["data"]["highlights"][0]["thumbnail_url"]
    assert client.get(url).status_code == 200
    remove_stored(settings, session_id, url.rsplit("/", 1)[1])
    response = client.get(url)
    assert response.status_code == 404
    assert response.json() == {"detail": "Artifact not found"}


# One process only: with S3 the bucket serves the file, after the service's own lookup.
@pytest.mark.parametrize("mode", ["threads"])
def test_an_artifact_that_vanishes_between_lookup_and_response_is_404(
    client: TestClient, clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    session_id = upload(client, clips["short"]).json()["sessionId"]
    wait_for(client, session_id)
    url = client.get(f"{API}/results/{session_id}").json()["data"]["highlights"][0]["thumbnail_url"]
    service = client.app.state.service  # type: ignore[attr-defined]
    lookup = service.artifact

    def lookup_then_lose(session_id: str, name: str) -> Path:
        path = lookup(session_id, name)  # the real lookup finds the file...
        assert isinstance(path, Path)
        path.unlink()  # ...and a cleanup removes it before the response is sent
        return path

    monkeypatch.setattr(service, "artifact", lookup_then_lose)
    response = client.get(url)
    assert response.status_code == 404
    assert response.json() == {"detail": "Artifact not found"}


def test_every_documented_error_is_our_error_body(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(document)
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    checked = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if operation.get("parameters") or "requestBody" in operation:
                assert "422" in operation["responses"], f"{method} {path} documents no 422"
            for code, response in operation["responses"].items():
                if int(code) < 400:
                    continue
                content = response.get("content", {})
                assert list(content) == ["application/json"], f"{method} {path} {code}"
                assert content["application/json"]["schema"] == error, f"{method} {path} {code}"
                checked += 1
    assert checked > 30


def test_an_upload_links_its_session_id_to_every_session_operation(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    links = document["paths"][f"{API}/upload"]["post"]["responses"]["202"]["links"]
    operations = {
        op["operationId"]: (path, method)
        for path, ops in document["paths"].items()
        for method, op in ops.items()
    }
    targets = set()
    for link in links.values():
        assert link["parameters"] == {"session_id": "$response.body#/sessionId"}
        path, _ = operations[link["operationId"]]
        targets.add(path.removeprefix(API).split("/")[1])
    assert targets == {"status", "events", "results", "cancel", "cleanup", "artifacts"}


def test_highlight_reasons_are_a_documented_closed_set(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert set(schemas["HighlightReason"]["enum"]) == {
        "high_motion",
        "peak_intensity",
        "scene_change",
        "low_motion",
    }
    description = schemas["HighlightOut"]["properties"]["reason"]["description"]
    for reason in schemas["HighlightReason"]["enum"]:
        assert f"`{reason}`:" in description
