"""Property-based fuzzing of the whole API from its own OpenAPI schema (schemathesis): no input
the schema allows, or breaks, gets a 5xx or an answer that does not match its documentation.
Each operation is fuzzed on its own, then in chains that follow the schema's links from an
upload to the operations on its session."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from app import create_app
from config import Settings
from tests.server import wait_until
from tests.synthetic import make_video

_STORAGE = Path(tempfile.mkdtemp(prefix="fuzz-storage-"))
# Removed when the process ends, not by a fixture: every process that collects this module makes
# the folder (the app below opens its database there), also one that runs none of its tests (an
# `--collect-only`, the other worker of `make test`).
atexit.register(shutil.rmtree, _STORAGE, ignore_errors=True)
# With a key set, the fuzzer also checks that a missing or wrong key is refused everywhere.
API_KEY = "fuzz-key"
app = create_app(Settings(storage_dir=_STORAGE, max_upload_mb=2, max_queued=5, api_key=API_KEY))
# Schemathesis runs the app's lifespan itself (from the first request of a test to its end): a
# TestClient here would start a second one on the same storage, which the storage lock refuses,
# as it refuses a second server.
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(
    # 40 per operation in the suite; FUZZ_EXAMPLES=500 for a deeper run by hand.
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_answers_every_generated_request_as_documented(case: schemathesis.Case) -> None:
    # Every built-in check but one: "a schema-valid request must be accepted" cannot hold for
    # the upload, whose schema says "binary" where the service needs a decodable video (a PNG
    # fits the schema and is rightly a 415).
    case.call_and_validate(
        headers={"X-API-Key": API_KEY}, excluded_checks=[positive_data_acceptance]
    )


@functools.cache
def _clip() -> bytes:
    """A real one-second video: only an upload that answers 202 starts a chain of links."""
    path = make_video(_STORAGE / "fuzz-clip.mp4", seconds=1, size=(160, 120))
    return path.read_bytes()


_SETTLE_SECONDS = 60.0


def _settle(session_id: str) -> None:
    """Wait until the session's analysis has ended (a deadline, not a hang)."""
    sessions = app.state.service.sessions

    def ended() -> bool:
        session = sessions.get_session(session_id)
        return session is None or session.status.is_terminal

    wait_until(ended, _SETTLE_SECONDS, f"session {session_id} ending")


class SessionWorkflows(schema.as_state_machine()):  # type: ignore[misc]
    """Chains operations along the OpenAPI links: an upload's `sessionId` goes to status,
    events, results, cancel, cleanup and artifacts, so they are fuzzed on real sessions
    (completed, failed, cancelled, cleaned up), not only on unknown ids.

    Each accepted upload is followed to its end before the next step. Otherwise what a step
    answers depends on how far an analysis has got (results 400 or 200, cancel 200 or 409), and
    Hypothesis, replaying a scenario, sees the same choices lead on differently and calls the
    strategy flaky. The queued and processing states are the contract tests' (test_api.py)."""

    def before_call(self, case: schemathesis.Case) -> None:
        # A case meant to break the schema (a missing field, say) must stay broken.
        negative = case.meta is not None and case.meta.generation.mode.is_negative
        upload = case.operation.path.endswith("/upload")
        if upload and not negative and isinstance(case.body, dict) and "video" in case.body:
            # The form fields stay generated; the file is a video the service can analyse.
            case.body["video"] = _clip()

    def after_call(self, response: Any, case: schemathesis.Case) -> None:
        super().after_call(response, case)
        if case.operation.path.endswith("/upload") and response.status_code == 202:
            _settle(response.json()["sessionId"])

    def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
        return {"headers": {"X-API-Key": API_KEY}}

    def validate_response(  # type: ignore[override]
        self, response: Any, case: schemathesis.Case, **kwargs: Any
    ) -> None:
        # As above: a schema-valid request may rightly be refused (a full queue, a bad params).
        # And schema-breaking requests are the stateless test's: here the key header, which a
        # negative case may have dropped, is always sent, and a query value made an object is
        # sent as parameters of other names, which the service rightly ignores, so a request
        # Schemathesis counts as invalid can be a valid one that rightly answers 200.
        case.validate_response(
            response, excluded_checks=[positive_data_acceptance, negative_data_rejection]
        )


TestSessionWorkflows = SessionWorkflows.TestCase
TestSessionWorkflows.settings = settings(
    # FUZZ_SCENARIOS=200 for a deeper run by hand. No example database: a scenario that failed
    # once is not replayed by the next run of the suite, whose failure it would hide.
    max_examples=int(os.environ.get("FUZZ_SCENARIOS", "20")),
    database=None,
    stateful_step_count=6,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
