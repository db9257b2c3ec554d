"""The engine's errors: what a caller can be told about a video that could not be analysed."""

from __future__ import annotations


class InvalidVideo(ValueError):
    """The file cannot be opened or decoded as a video."""


class VideoDecodeError(RuntimeError):
    """Decoding failed part-way through a video that opened fine."""


class VideoTooLong(InvalidVideo):
    """The video is longer than the analysis accepts (`AnalysisOptions.max_seconds`): found
    while decoding when the container did not declare its length, or declared it wrongly."""


class AnalysisCancelled(Exception):
    """The caller set the cancel event; the analysis stopped early."""
