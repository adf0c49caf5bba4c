"""Unit tests of the image checks and preprocessing (Pillow only)."""

from __future__ import annotations

import io
import warnings
from typing import Any

import pytest
from PIL import Image, ImageDraw

from mailgw_ocr.images import (
    DecompressionBomb,
    ImageFailed,
    ImageLimits,
    ImageSkipped,
    decode,
    inspect,
    prepare,
    upscale_factor,
)

LIMITS = ImageLimits()


def encode(image: Image.Image, fmt: str = "PNG", **params: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def noise(width: int, height: int) -> Image.Image:
    return Image.effect_noise((width, height), 80).convert("RGB")


def test_a_readable_image_passes(img: Any) -> None:
    assert inspect(img.text(), LIMITS)[0] == "PNG"
    assert inspect(img.photo(), LIMITS) == ("JPEG", 800, 600)


def test_tracking_pixel_is_skipped() -> None:
    gif = encode(Image.new("P", (1, 1)), "GIF")
    with pytest.raises(ImageSkipped, match="under 1024"):
        inspect(gif, LIMITS)


def test_small_logo_is_skipped_by_its_pixel_size() -> None:
    data = encode(noise(20, 200))
    assert len(data) > LIMITS.min_bytes
    with pytest.raises(ImageSkipped, match="20x200 px"):
        inspect(data, LIMITS)


def test_oversized_file_is_skipped() -> None:
    data = encode(noise(300, 300))
    with pytest.raises(ImageSkipped, match="over"):
        inspect(data, ImageLimits(max_bytes=len(data) - 1))


def test_pixel_flood_is_a_failure(img: Any) -> None:
    with pytest.raises(DecompressionBomb):
        inspect(img.pixel_flood(), LIMITS)


def test_a_tiny_pixel_flood_is_still_reported(img: Any) -> None:
    data = img.pixel_flood(60_000, 60_000)[:200]  # header only: far under min_bytes, still a bomb
    with pytest.raises(DecompressionBomb):
        inspect(data, LIMITS)


def test_over_max_pixels_is_a_bomb_whatever_the_warnings_filter() -> None:
    # Between 1x and 2x the limit Pillow only warns; the explicit check must hold even if warnings are ignored.
    data = encode(noise(150, 100))
    limits = ImageLimits(min_bytes=0, max_pixels=10_000)
    saved = Image.MAX_IMAGE_PIXELS
    try:
        limits.apply_to_pillow()
        for action in ("ignore", "error"):
            with warnings.catch_warnings():
                warnings.simplefilter(action, Image.DecompressionBombWarning)
                with pytest.raises(DecompressionBomb):
                    inspect(data, limits)
                with pytest.raises(DecompressionBomb):
                    decode(data, limits)
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def test_corrupt_image_is_a_failure(img: Any) -> None:
    with pytest.raises(ImageFailed, match="not a readable"):
        inspect(img.corrupt(), LIMITS)


def test_tiny_garbage_is_just_skipped() -> None:
    with pytest.raises(ImageSkipped):
        inspect(b"\x89PNG\r\n\x1a\nshort", LIMITS)


def test_truncated_jpeg_fails_on_decode(img: Any) -> None:
    data = img.truncated_jpeg()
    inspect(data, LIMITS)  # the header is intact
    with pytest.raises(ImageFailed, match="truncated"):
        decode(data, LIMITS)


def test_formats_outside_the_list_are_not_decoded() -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n" + b"showpage\n" * 200
    with pytest.raises(ImageFailed, match="not a readable"):
        inspect(eps, LIMITS)
    pdf_as_png = b"%PDF-1.4\n" + b"0" * 2000
    with pytest.raises(ImageFailed):
        inspect(pdf_as_png, LIMITS)


def test_decode_keeps_colour_and_grayscale() -> None:
    image = decode(encode(noise(500, 500).convert("L")), LIMITS)
    assert image.mode == "L" and image.size == (500, 500)
    colour = decode(encode(noise(500, 500)), LIMITS)
    assert colour.mode == "RGB" and colour.size == (500, 500)
    cmyk = decode(encode(Image.new("CMYK", (500, 500)), "JPEG"), LIMITS)
    assert cmyk.mode == "RGB"


def test_transparent_background_becomes_white() -> None:
    rgba = Image.new("RGBA", (100, 50), (0, 0, 0, 0))  # fully transparent black
    ImageDraw.Draw(rgba).text((10, 10), "Hi", fill=(0, 0, 0, 255))
    flat = prepare(rgba, ImageLimits(upscale_below_px=0)).convert("L")
    assert flat.getpixel((0, 0)) == 255
    assert any(flat.histogram()[:128])  # the text is still there (dark pixels)


def test_palette_transparency_becomes_white() -> None:
    pal = Image.new("P", (60, 60), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    assert prepare(pal, ImageLimits(upscale_below_px=0)).convert("L").getpixel((5, 5)) == 255


def test_animated_gif_reads_the_first_frame() -> None:
    frames = [Image.new("L", (200, 100), shade) for shade in (255, 0, 128)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode(data, ImageLimits(min_bytes=0, upscale_below_px=0)).getpixel((5, 5)) == 255


def test_upscale_factor() -> None:
    assert upscale_factor(300, 80, LIMITS) == 2  # a small banner: small text likely
    assert upscale_factor(800, 600, LIMITS) == 1  # photo-sized
    assert upscale_factor(300, 80, ImageLimits(upscale_below_px=0)) == 1  # disabled
    assert upscale_factor(3000, 390, LIMITS) == 1  # would exceed max_upscaled_pixels


def test_small_images_are_upscaled_on_decode() -> None:
    assert decode(encode(noise(300, 120)), LIMITS).size == (600, 240)


def test_16_bit_images_keep_their_contrast() -> None:
    deep = Image.new("I;16", (200, 100), 0)
    deep.paste(40_000, (50, 20, 150, 80))  # a plain convert("L") would clip this and the background alike
    gray = decode(encode(deep), ImageLimits(min_bytes=0, upscale_below_px=0))
    assert gray.getpixel((0, 0)) == 0 and gray.getpixel((100, 50)) == 255
