"""Service configuration: one typed, bounded `Settings` read from the environment.

`app.py` builds it with `load_settings()` when it creates the application (or takes one given to
`create_app`, which is how the tests point storage at a temporary folder). A value that breaks
its rule becomes a `ConfigurationError` whose message is one line naming the variable and the
rule, which is all a person starting the server needs to read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError


class Settings(BaseSettings):
    """Every knob of the service, from environment variables of the same name (upper case)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    port: int = Field(8000, ge=1, le=65535, description="Port to listen on.")
    max_workers: int = Field(2, ge=1, le=32, description="Analyses that run at once.")
    max_queued: int = Field(20, ge=0, le=10_000, description="Sessions that may wait for a worker.")
    max_upload_mb: int = Field(500, ge=1, le=100_000, description="Largest accepted upload, MiB.")
    storage_dir: Path = Field(Path("storage"), description="Where uploads and artifacts live.")
    session_ttl_hours: float = Field(24.0, gt=0, le=24 * 365, description="Session lifetime.")
    cleanup_interval_seconds: float = Field(
        300.0, gt=0, le=86_400, description="How often expired sessions are swept."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated origins allowed by CORS ('*' for any)."
    )
    api_key: SecretStr | None = Field(
        None, description="When set, /api/v1 and /analyze need this in the X-API-Key header."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="'json' writes one JSON object per log line (for Railway's search)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="The least severe log level written."
    )
    metrics_token: SecretStr | None = Field(
        None, description="When set, GET /metrics also accepts 'Authorization: Bearer <token>'."
    )
    max_concurrent_uploads: int = Field(
        8, ge=1, le=1000, description="Request bodies received at once (uploads and /analyze)."
    )
    upload_idle_seconds: float = Field(
        30.0, gt=0, le=3600, description="An upload that sends nothing for this long is cut off."
    )
    disk_reserve_mb: int = Field(
        256,
        ge=0,
        le=100_000_000,
        description="Free space, MiB, that uploads never use: room for the session database "
        "and the thumbnails and reels of the analyses under way.",
    )
    max_video_minutes: float = Field(
        90.0, gt=0, le=24 * 60, description="Longest video accepted, by its container's duration."
    )
    url_signing_secret: SecretStr | None = Field(
        None,
        description="Key of the signed artifact and event-stream URLs (only with API_KEY); "
        "derived from API_KEY when unset, so replicas sharing the key agree.",
    )
    signed_url_seconds: int = Field(
        3600, ge=10, le=7 * 86_400, description="How long a signed URL stays valid."
    )

    # -- scaling out (README "Scaling out"): the two supported combinations are
    # threads + sqlite + local (the default, one process) and rq + redis + s3 (distributed).
    task_backend: Literal["threads", "rq"] = Field(
        "threads", description="'threads': analyses run in this process; 'rq': in RQ workers."
    )
    state_store: Literal["sqlite", "redis"] = Field(
        "sqlite", description="Where sessions live: SQLite in STORAGE_DIR, or Redis."
    )
    blob_store: Literal["local", "s3"] = Field(
        "local", description="Where videos and artifacts live: STORAGE_DIR, or an S3 bucket."
    )
    redis_url: SecretStr | None = Field(
        None, description="redis://[:password@]host:port/db (may hold a password)."
    )
    s3_endpoint_url: str | None = Field(None, description="The S3-compatible endpoint.")
    s3_bucket: str | None = Field(None, description="The bucket of videos and artifacts.")
    s3_access_key_id: SecretStr | None = Field(None, description="S3 access key id.")
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret access key.")
    s3_region: str = Field("us-east-1", description="The bucket's region (signing).")
    s3_url_style: Literal["path", "virtual"] = Field(
        "path", description="'path' (endpoint/bucket/key) or 'virtual' (bucket.endpoint/key)."
    )
    s3_url_seconds: int = Field(
        300,
        ge=10,
        le=7 * 86_400,
        description="How long the presigned URL an artifact redirects to stays valid.",
    )
    worker_heartbeat_seconds: int = Field(
        10, ge=1, le=300, description="How often an RQ worker says it is alive while analysing."
    )
    worker_lost_seconds: int = Field(
        60,
        ge=2,
        le=3600,
        description="Silence after a heartbeat before a job counts as abandoned (its worker "
        "died) and runs again elsewhere.",
    )
    job_sweep_seconds: float = Field(
        10.0, gt=0, le=3600, description="How often abandoned jobs are looked for."
    )
    worker_metrics_port: int | None = Field(
        None, ge=1, le=65535, description="An RQ worker serves its /metrics on this port."
    )

    @model_validator(mode="after")
    def _a_combination_that_works(self) -> Settings:
        # One sentence naming the variable; load_settings() prints it as it is.
        if self.task_backend == "rq":
            if self.state_store != "redis":
                raise ValueError(
                    "TASK_BACKEND=rq needs STATE_STORE=redis: workers in other processes "
                    "must see the sessions"
                )
            if self.blob_store != "s3":
                raise ValueError(
                    "TASK_BACKEND=rq needs BLOB_STORE=s3: workers on other machines must "
                    "reach the videos"
                )
        elif self.state_store != "sqlite" or self.blob_store != "local":
            raise ValueError(
                "TASK_BACKEND=threads runs with STATE_STORE=sqlite and BLOB_STORE=local: unset "
                "STATE_STORE and BLOB_STORE, or set TASK_BACKEND=rq"
            )
        if self.state_store == "redis" and self.redis_url is None:
            raise ValueError("REDIS_URL must be set when STATE_STORE=redis")
        if self.blob_store == "s3":
            needed = ("s3_endpoint_url", "s3_bucket", "s3_access_key_id", "s3_secret_access_key")
            for name in needed:
                if getattr(self, name) is None:
                    raise ValueError(f"{name.upper()} must be set when BLOB_STORE=s3")
        if self.worker_lost_seconds <= self.worker_heartbeat_seconds:
            raise ValueError(
                "WORKER_LOST_SECONDS must be longer than WORKER_HEARTBEAT_SECONDS "
                f"({self.worker_lost_seconds} <= {self.worker_heartbeat_seconds})"
            )
        return self

    @property
    def distributed(self) -> bool:
        """True when analyses run in RQ workers, with sessions in Redis and files in S3."""
        return self.task_backend == "rq"

    @field_validator(
        "api_key",
        "url_signing_secret",
        "redis_url",
        "s3_access_key_id",
        "s3_secret_access_key",
    )
    @classmethod
    def _not_blank(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # An empty variable is a mistake, not a way to turn the check off: unset it for that.
        if value is not None and not value.get_secret_value().strip():
            name = (info.field_name or "").upper()
            raise ValueError(f"{name} is set but empty: give it a value, or unset it")
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        # A comma-separated list reads better in a Railway variable than a JSON array.
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("s3_endpoint_url", "s3_bucket", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # An empty Railway variable reads as unset, so the combination check names it.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "log_format", "task_backend", "state_store", "blob_store", "s3_url_style", mode="before"
    )
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("metrics_token")
    @classmethod
    def _token_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty token would look like protection and be none.
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("METRICS_TOKEN is set but empty")
        return value

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def session_ttl_seconds(self) -> float:
        return self.session_ttl_hours * 3600.0

    @property
    def disk_reserve_bytes(self) -> int:
        return self.disk_reserve_mb * 1024 * 1024


class ConfigurationError(ValueError):
    """A setting from the environment breaks its rule; the message names the variable."""


class StartupRefused(Exception):
    """The server or a worker must not start (a folder in use, a backend out of reach); the
    message, one line, says why."""


def load_settings() -> Settings:
    """The settings from the environment.

    Raises:
        ConfigurationError: a value is out of range or of the wrong type, e.g.
            "MAX_WORKERS must be at least 1 (got 0)"; several problems are joined with "; ".
    """
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigurationError("; ".join(_describe(e) for e in exc.errors())) from None
    except SettingsError as exc:
        raise ConfigurationError(str(exc)) from None


# The rule each pydantic error type stands for, phrased after the variable's name.
_RULES = {
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be greater than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
}
# Never echoed back: the value is a secret.
_SECRET = frozenset({"api_key", "redis_url", "s3_access_key_id", "s3_secret_access_key"})


def _plain(value: object) -> object:
    # 0 reads better than 0.0 in a message about a bound.
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _describe(error: ErrorDetails) -> str:
    if not error["loc"]:
        # A rule across variables (_a_combination_that_works): its sentence names them.
        return error["msg"].removeprefix("Value error, ")
    field = str(error["loc"][0])
    name = field.upper() or "configuration"
    template = _RULES.get(error["type"])
    if template is not None:
        bounds = {k: _plain(v) for k, v in error.get("ctx", {}).items()}
        rule = template.format(**bounds)
    else:
        # A validator's own message ("Value error, ...") or pydantic's sentence. One that
        # already names the variable is the whole line.
        message = error["msg"].removeprefix("Value error, ")
        if message.startswith(name + " "):
            return message
        rule = f"is invalid: {message[:1].lower()}{message[1:]}"
    if field in _SECRET or "input" not in error:
        return f"{name} {rule}"
    value = error["input"]
    shown = f"'{value}'" if value == "" else str(value)
    return f"{name} {rule} (got {shown})"
