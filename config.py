"""Service configuration: one typed, bounded `Settings` read from the environment.

`app.py` builds it in `lifespan` (or takes one given to `create_app`, which is how the tests point
storage at a temporary folder), so nothing is read at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


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

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        # A comma-separated list reads better in a Railway variable than a JSON array.
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("log_format", mode="before")
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
