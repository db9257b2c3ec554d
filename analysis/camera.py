"""Where the camera is: its shake and drift, measured so they can be removed before motion is.

`CameraTracker` estimates the translation of a frame against a reference frame; the helpers shift
images into reference coordinates and find the pixels two shifted frames have in common.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def _tile_sums(image: np.ndarray, tile_h: int, tile_w: int) -> np.ndarray:
    """Sums over a 3x3 grid of tiles, row by row (the remainder rows/columns are ignored)."""
    # INTER_AREA on an exact 3x3 reduction is a tile mean, and far cheaper than numpy's reshape-sum.
    means = cv2.resize(image[: 3 * tile_h, : 3 * tile_w], (3, 3), interpolation=cv2.INTER_AREA)
    return means.ravel().astype(np.float64) * (tile_h * tile_w)


def _column_median(values: np.ndarray) -> np.ndarray:
    """`np.median(values, axis=0)` for a few rows, bit for bit, without its ~60 us of overhead
    (it ran six times per sample). NaN is passed on as np.median does."""
    ordered = np.sort(values, axis=0)
    half = ordered.shape[0] // 2
    if ordered.shape[0] % 2:
        middle = ordered[half]
    else:
        middle = (ordered[half - 1] + ordered[half]) / 2
    # np.sort puts NaN last, where the middle may miss it; np.median would return NaN.
    return np.where(np.isnan(ordered[-1]), np.nan, middle)


class CameraTracker:
    """Where the camera is relative to a reference frame: a translation, in pixels.

    Coarse-to-fine Lucas-Kanade from an eighth to a half of the analysis size (sub-pixel at half
    size is plenty), solved separately on each tile of a 3x3 grid and combined by the median: the
    person moves a few tiles, the camera moves them all. It is measured against a fixed reference
    rather than the previous frame because summing frame-to-frame estimates is a random walk that
    slowly misaligns everything. (Phase correlation on windowed tiles was tried first: it is biased
    towards zero shift and half a pixel off.)
    """

    LEVELS = (3, 2, 1)
    """Pyramid levels used, coarse to fine (level k is 2**k times smaller than the input); the
    coarsest one catches a hand-held jolt of ten pixels or more between two samples."""

    def __init__(self) -> None:
        self.levels: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
        self.levels = {}

    @classmethod
    def _pyramid(cls, image: np.ndarray) -> dict[int, np.ndarray]:
        out = {}
        for level in range(1, max(cls.LEVELS) + 1):
            image = cv2.pyrDown(image)
            out[level] = image
        return out

    def anchor(self, reference: np.ndarray) -> None:
        self.levels = {}
        for level, image in self._pyramid(reference).items():
            if level not in self.LEVELS:
                continue
            gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
            gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
            tile_h, tile_w = image.shape[0] // 3, image.shape[1] // 3
            sxx = _tile_sums(gx * gx, tile_h, tile_w)
            sxy = _tile_sums(gx * gy, tile_h, tile_w)
            syy = _tile_sums(gy * gy, tile_h, tile_w)
            det = sxx * syy - sxy * sxy
            # A tile of flat wall cannot tell where it moved: require texture in both directions.
            trace = sxx + syy
            smallest = trace / 2 - np.sqrt(np.maximum(trace * trace / 4 - det, 0.0))
            usable = smallest > 0.05 * tile_h * tile_w
            safe = np.where(usable, det, 1.0)
            inverse = (
                np.stack([np.stack([syy, -sxy], axis=1), np.stack([-sxy, sxx], axis=1)], axis=1)
                / safe[:, None, None]
            )
            self.levels[level] = (image, gx, gy, inverse, usable)

    def locate(self, grey: np.ndarray, start: tuple[float, float]) -> tuple[float, float] | None:
        """The camera shift of `grey`, starting the search at `start`; None if it cannot be told."""
        pyramid = self._pyramid(grey)
        shift = np.array(start, dtype=np.float64)
        for level in self.LEVELS:
            reference, gx, gy, inverse, usable = self.levels[level]
            if usable.sum() < 3:
                return None
            scale = 2.0**level
            tile_h, tile_w = reference.shape[0] // 3, reference.shape[1] // 3
            for _ in range(2):
                moved = shift_image(pyramid[level], (shift[0] / scale, shift[1] / scale), reference)
                diff = moved - reference
                b = np.empty((9, 2))
                b[:, 0] = _tile_sums(gx * diff, tile_h, tile_w)
                b[:, 1] = _tile_sums(gy * diff, tile_h, tile_w)
                # moved(x) = reference(x - r)  =>  moved - reference = -grad . r
                residual = -np.einsum("tij,tj->ti", inverse, b)[usable]
                shift += _column_median(residual) * scale
        return float(shift[0]), float(shift[1])


def shift_image(
    image: np.ndarray, shift: tuple[float, float], fill: np.ndarray | None = None
) -> np.ndarray:
    """Move the image back by the camera's shift, into reference-frame coordinates.

    Where the shifted image has no pixels (the camera drifted), the reference frame fills in: a
    border that changed with every wobble would look like motion.
    """
    if shift == (0.0, 0.0):
        return image
    matrix = np.array([[1, 0, -shift[0]], [0, 1, -shift[1]]], dtype=np.float32)
    size = (image.shape[1], image.shape[0])
    if fill is None or fill.shape != image.shape:
        return cv2.warpAffine(
            image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
    out = fill.copy()
    cv2.warpAffine(
        image, matrix, size, dst=out, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT
    )
    return out


def common_window(
    size: tuple[int, int], a: tuple[float, float], b: tuple[float, float]
) -> tuple[slice, slice]:
    """Pixels that are real image (not border fill) in both of two shifted frames."""
    width, height = size
    x0 = math.ceil(max(-a[0], -b[0], 0.0)) + 1
    x1 = math.floor(min(width - 1 - a[0], width - 1 - b[0], width - 1.0))
    y0 = math.ceil(max(-a[1], -b[1], 0.0)) + 1
    y1 = math.floor(min(height - 1 - a[1], height - 1 - b[1], height - 1.0))
    return slice(x0, max(x0, x1)), slice(y0, max(y0, y1))
