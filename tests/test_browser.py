"""The reference page at `/`, driven in Debian's chromium by Playwright against a real server.

The server is `python -m uvicorn app:app` in a subprocess on a loopback port; the clips are
written by `tests.synthetic` and really analysed. Set BROWSER_SCREENSHOT=docs/screenshot.png to
save the results page while the tests run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.server import Server
from tests.synthetic import make_video

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


def get_json(url: str) -> tuple[int, dict]:
    response = httpx.get(url, timeout=5)
    return response.status_code, response.json()


# -- fixtures ---------------------------------------------------------------------------------


API_KEY = "correct horse battery staple"


def run_server(folder: Path, api_key: str | None) -> Iterator[str]:
    """The real service (uvicorn in a subprocess) on a free loopback port; its base URL."""
    server = Server(folder / "storage", folder / "server.log", MAX_WORKERS="2")
    server.env.pop("API_KEY", None)  # never the one in the developer's shell
    if api_key:
        server.env["API_KEY"] = api_key
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from run_server(tmp_path_factory.mktemp("server"), api_key=None)


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service with API_KEY set."""
    yield from run_server(tmp_path_factory.mktemp("keyed"), api_key=API_KEY)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # A failure, not a skip: a browser test that quietly does not run checks nothing.
    # `make test` installs chromium where it can (root with apt).
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: run apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser: Browser, base_url: str) -> Iterator[Page]:
    """A fresh page; an uncaught JavaScript error in it fails the test."""
    context = browser.new_context(base_url=base_url, viewport={"width": 1000, "height": 900})
    page = context.new_page()
    # Actions and assertions (`expect`, whose own default is 5 s) wait up to 30 s: `make test`
    # runs another test file beside this one, and the browser, the server and the analysis
    # then share the two cores with it.
    page.set_default_timeout(30_000)
    expect.set_options(timeout=30_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    yield from open_page(browser, server)


@pytest.fixture
def keyed_page(browser: Browser, keyed_server: str) -> Iterator[Page]:
    yield from open_page(browser, keyed_server)


def to_h264(source: Path, target: Path) -> Path:
    """Re-encode a clip as H.264, which browsers play (OpenCV writes only MPEG-4 Part 2)."""
    import av

    capture = cv2.VideoCapture(str(source))
    fps = round(capture.get(cv2.CAP_PROP_FPS)) or 30
    try:
        with av.open(str(target), "w", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
            stream.pix_fmt = "yuv420p"
            stream.width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
            stream.height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                video_frame = av.VideoFrame.from_ndarray(frame, format="bgr24")
                container.mux(stream.encode(video_frame))
            container.mux(stream.encode())
    finally:
        capture.release()
    return target


@pytest.fixture(scope="module")
def workout_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 25 s: rest, a set of squats, rest, a set of jumping jacks, rest; in H.264."""
    folder = tmp_path_factory.mktemp("clips")
    try:
        from tests.synthetic import SetSpec, WorkoutSpec, make_workout_video
    except ImportError:  # the articulated figure is newer than the block
        raw = make_video(folder / "raw.mp4", seconds=20, motion="periodic", period=1.2)
    else:
        spec = WorkoutSpec(
            sets=(SetSpec("squat", 6, 1.2), SetSpec("jumping_jack", 8, 0.9)),
            size=(384, 216),
            rest=(2.5, 3.5),
        )
        raw = make_workout_video(folder / "raw.mp4", spec).path
    return to_h264(raw, folder / "workout.mp4")


# -- tests ------------------------------------------------------------------------------------


def test_page_uploads_a_workout_and_shows_its_results(
    page: Page, server: str, workout_clip: Path
) -> None:
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto("/")
    page.set_input_files("#video-file", workout_clip)
    page.select_option("#analysis-type", "full")
    page.check("#make-reel")
    page.click("#upload-button")

    expect(page.locator("#results")).to_be_visible(timeout=30_000)
    expect(page.locator("#status")).to_have_attribute("data-status", "completed")
    assert page.eval_on_selector("#upload-progress", "e => e.value") == 100
    assert page.eval_on_selector("#analysis-progress", "e => e.value") == 100
    expect(page.locator("#error")).to_be_hidden()

    # Progress came over the event stream, not by polling the status endpoint.
    events = [url for url in requests if "/api/v1/video/events/" in url]
    assert len(events) == 1 and not [url for url in requests if "/video/status/" in url]
    session_id = events[0].rsplit("/", 1)[1]
    code, answer = get_json(f"{server}/api/v1/video/results/{session_id}")
    assert code == 200
    data = answer["data"]
    segments = data["workout"]["segments"]
    sets = [s for s in segments if s["kind"] == "active"]
    assert data["highlights"] and sets, "the clip should give highlights and at least one set"

    # Highlights: one thumbnail each, really loaded from the artifacts endpoint.
    thumbnails = page.locator("#highlights img")
    expect(thumbnails).to_have_count(len(data["highlights"]))
    page.wait_for_function(
        "[...document.querySelectorAll('#highlights img')].every(i => i.complete)"
    )
    widths = thumbnails.evaluate_all("images => images.map(i => i.naturalWidth)")
    assert all(width > 0 for width in widths)

    # The timeline: a bar per set and per rest, a tick per repetition.
    expect(page.locator("#timeline .segment.active")).to_have_count(len(sets))
    expect(page.locator("#timeline .segment.rest")).to_have_count(len(segments) - len(sets))
    expect(page.locator("#timeline .rep-tick")).to_have_count(sum(s["reps"] for s in sets))
    assert data["workout"]["total_reps"] > 0

    # The set table: a row per set with its exercise, start, end, reps, tempo and intensity,
    # and under it the reps, each with its time, duration and depth.
    rows = page.locator("#sets tbody tr.set")
    expect(rows).to_have_count(len(sets))
    first = rows.nth(0).locator("td")
    expect(first.nth(3)).to_have_text(str(sets[0]["reps"]))
    expect(first.nth(4)).to_have_text(f"{sets[0]['tempo']:.1f} /min")
    expect(first.nth(5)).to_contain_text(f"{round(sets[0]['intensity'] * 100)} %")
    reps = page.locator("#sets tbody tr.reps").nth(0).locator("li.rep")
    expect(reps).to_have_count(sets[0]["reps"])
    expect(reps.nth(0)).to_contain_text(f"{sets[0]['rep_durations'][0]:.1f} s")

    # The player plays the local file; a highlight seeks it.
    page.wait_for_function("document.querySelector('#player').readyState >= 1")
    target = data["highlights"][0]["start"]
    thumbnails.nth(0).click()
    page.wait_for_function(
        f"Math.abs(document.querySelector('#player').currentTime - {target}) < 1.5"
    )
    page.eval_on_selector("#player", "p => p.pause()")

    # The reel, asked for with the checkbox, plays in its own player.
    expect(page.locator("#reel")).to_be_visible()
    assert page.eval_on_selector("#reel", "r => r.getAttribute('src')") == data["reel_url"]
    page.wait_for_function("document.querySelector('#reel').readyState >= 1")

    if screenshot := os.environ.get("BROWSER_SCREENSHOT"):
        seek = "(v, t) => new Promise(r => { v.addEventListener('seeked', r, {once: true}); "
        seek += "v.currentTime = t; })"
        page.eval_on_selector("#player", seek, 4.0)
        page.eval_on_selector("#reel", seek, 1.0)
        # Chromium draws a spinner over a video until it can play on from where it stands.
        page.wait_for_function(
            "['#player', '#reel'].every(s => document.querySelector(s).readyState === 4)"
        )
        page.wait_for_timeout(1500)  # and fades it out after a while
        page.screenshot(path=screenshot, full_page=True)


def test_cancel_stops_the_analysis_of_a_long_clip_and_clean_up_forgets_it(
    page: Page, server: str, clips: dict[str, Path]
) -> None:
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto("/")
    page.set_input_files("#video-file", clips["long"])
    page.select_option("#analysis-type", "workout")
    page.click("#upload-button")
    status = page.locator("#status")
    expect(status).to_have_attribute("data-status", "processing", timeout=15_000)
    expect(page.locator("#cancel-button")).to_be_enabled()

    page.click("#cancel-button")
    expect(status).to_have_attribute("data-status", "cancelled")
    expect(status).to_have_text("Analysis cancelled.")
    expect(page.locator("#cancel-button")).to_be_disabled()
    expect(page.locator("#results")).to_be_hidden()
    progress = page.eval_on_selector("#analysis-progress", "e => e.value")
    assert 0 < progress < 100
    events = [url for url in requests if "/video/events/" in url]
    session_id = events[-1].rsplit("/", 1)[1]
    code, answer = get_json(f"{server}/api/v1/video/status/{session_id}")
    assert code == 200 and answer["status"] == "cancelled"

    page.click("#cleanup-button")
    expect(status).to_have_attribute("data-status", "cleaned")
    assert get_json(f"{server}/api/v1/video/status/{session_id}")[0] == 404


def test_an_api_error_is_shown_in_plain_words(page: Page, tmp_path: Path) -> None:
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("these are my training notes, not a video")
    page.goto("/")
    page.set_input_files("#video-file", not_a_video)
    page.click("#upload-button")
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("Unsupported file type: upload a video")
    expect(page.locator("#status")).to_have_attribute("data-status", "error")
    expect(page.locator("#cancel-button")).to_be_disabled()


def test_with_an_api_key_the_page_sends_it_on_every_request(
    keyed_page: Page, workout_clip: Path
) -> None:
    page = keyed_page
    page.goto("/")
    page.set_input_files("#video-file", workout_clip)
    page.select_option("#analysis-type", "highlights")
    page.click("#upload-button")
    expect(page.locator("#error")).to_contain_text("The server needs an API key")

    page.click("summary")
    page.fill("#api-key", API_KEY)
    page.press("#api-key", "Tab")  # saved on change
    resource_types: dict[str, str] = {}
    page.on("request", lambda r: resource_types.setdefault(r.url, r.resource_type))
    page.click("#upload-button")
    expect(page.locator("#results")).to_be_visible(timeout=30_000)
    expect(page.locator("#error")).to_be_hidden()

    # EventSource cannot send the header: a plain EventSource opens the upload's signed URL...
    events = [url for url in resource_types if "/video/events/" in url]
    assert len(events) == 1 and resource_types[events[0]] == "eventsource"
    assert "expires=" in events[0] and "token=" in events[0]
    # ...and plain <img> elements load the thumbnails from their signed URLs: no blobs.
    thumbnails = page.locator("#highlights img")
    expect(thumbnails.first).to_be_visible()
    page.wait_for_function(
        "[...document.querySelectorAll('#highlights img')].every(i => i.complete)"
    )
    images = thumbnails.evaluate_all(
        "images => images.map(i => ({src: i.src, width: i.naturalWidth}))"
    )
    assert images
    for image in images:
        assert "/video/artifacts/" in image["src"] and "token=" in image["src"], image
        assert image["width"] > 0, f"{image['src']} did not load"
        assert resource_types[image["src"]] == "image"
    # The one object URL is the chosen file itself, which the main player plays.
    player = page.eval_on_selector("#player", "p => p.src")
    assert [url for url in resource_types if url.startswith("blob:")] == [player]

    page.reload()
    expect(page.locator("#api-key")).to_have_value(API_KEY)
