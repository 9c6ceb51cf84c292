"""The decoder on mutated image bytes (hypothesis): whatever the bytes, the result is an RGB
image or an ``UnreadableImageError`` with a reason, never another exception."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from imgcls.data.images import UnreadableImageError, decode_rgb
from tests.conftest import make_image

hypothesis = pytest.importorskip(
    "hypothesis", reason="hypothesis is a dev dependency (make test installs it)"
)
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _seed(kind: str) -> bytes:
    buffer = io.BytesIO()
    make_image((90, 140, 200), seed=1, size=24).save(buffer, kind)
    return buffer.getvalue()


SEEDS = {kind: _seed(kind) for kind in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")}


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid small image with bytes overwritten, cut, inserted or repeated."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        action = draw(st.sampled_from(["overwrite", "cut", "insert", "repeat"]))
        if action == "overwrite":
            data[at : at + 4] = draw(st.binary(min_size=1, max_size=4))
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        else:
            data += data[at : at + 64] * draw(st.integers(1, 8))
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_image_bytes_decode_or_are_refused_with_a_reason(data: bytes):
    try:
        image = decode_rgb(data, name="fuzzed", min_side=16)
    except UnreadableImageError as exc:
        assert exc.reason
        return
    assert isinstance(image, Image.Image) and image.mode == "RGB" and min(image.size) >= 1
