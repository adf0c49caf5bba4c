"""Image checks and preprocessing before OCR (Pillow only, no tesseract).

Two steps, so that the expensive one runs only for images we will read:
`inspect` opens the header (cheap: sizes, format, bomb check), `decode` loads the pixels
and turns them into the grayscale image tesseract gets. Hostile input never raises
anything but `ImageSkipped` / `ImageFailed`.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

# Formats a mail client shows inline. Restricting Image.open keeps exotic decoders (EPS runs
# Ghostscript, PSD, ICNS, ...) away from attacker-supplied bytes.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")

# Pillow's pixel-count check warns (DecompressionBombWarning) between 1x and 2x MAX_IMAGE_PIXELS
# and raises above; a warning would let the bomb through, so make it an error process-wide.
warnings.simplefilter("error", Image.DecompressionBombWarning)

# Decoders raise a zoo of exceptions on crafted files; all of them mean "cannot read this image".
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError,
                  ZeroDivisionError, struct.error, MemoryError)


class ImageSkipped(Exception):
    """Not worth reading (tracking pixel, logo, oversized file): no symbol."""


class ImageFailed(Exception):
    """Cannot be read: broken, truncated, a decompression bomb, or tesseract gave up (OCR_FAILED)."""


class DecompressionBomb(ImageFailed):
    """Claims more pixels than allowed: always reported, however small the file."""


@dataclass(frozen=True)
class ImageLimits:
    min_bytes: int = 1024
    min_side_px: int = 32
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    upscale_below_px: int = 400
    max_upscaled_pixels: int = 4_000_000

    def apply_to_pillow(self) -> None:
        """Pillow's own bomb check uses a module global: align it with our limit."""
        Image.MAX_IMAGE_PIXELS = self.max_pixels


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecompressionBomb(f"decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageFailed("not a readable PNG/JPEG/GIF/BMP/TIFF/WebP image") from exc
    except _DECODE_ERRORS as exc:
        raise ImageFailed(f"unreadable image header: {type(exc).__name__}: {exc}") from exc
    width, height = image.size
    # Checked here too: Pillow's check depends on a global and on the warnings filter (which
    # pytest, for one, resets per test).
    if width * height > limits.max_pixels:
        raise DecompressionBomb(f"decompression bomb: {width}x{height} px exceeds {limits.max_pixels} pixels")
    return image


def inspect(data: bytes, limits: ImageLimits) -> tuple[str, int, int]:
    """Format, width and height from the header; raises ImageSkipped / ImageFailed.

    The header is opened first (cheap at any file size) so that a pixel flood is reported even
    when the file is tiny; other problems of files outside the size window are not worth a symbol.
    """
    size_problem = ""
    if len(data) < limits.min_bytes:
        size_problem = f"{len(data)} bytes, under {limits.min_bytes}"
    elif len(data) > limits.max_bytes:
        size_problem = f"{len(data)} bytes, over {limits.max_bytes}"
    try:
        with _open(data, limits) as image:
            width, height = image.size
            fmt = image.format or "?"
    except DecompressionBomb:
        raise
    except ImageFailed:
        if size_problem:
            raise ImageSkipped(size_problem) from None
        raise
    if size_problem:
        raise ImageSkipped(size_problem)
    if width < limits.min_side_px or height < limits.min_side_px:
        raise ImageSkipped(f"{width}x{height} px, under {limits.min_side_px} px")
    return fmt, width, height


def decode(data: bytes, limits: ImageLimits) -> Image.Image:
    """The first frame as an 8-bit image (L or RGB, see `prepare`) ready for tesseract; raises ImageFailed."""
    try:
        with _open(data, limits) as image:
            image.load()  # truncated files fail here (LOAD_TRUNCATED_IMAGES stays False)
            return prepare(image, limits)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecompressionBomb(f"decompression bomb: {exc}") from exc
    except _DECODE_ERRORS as exc:
        raise ImageFailed(f"cannot decode image: {type(exc).__name__}: {exc}") from exc


def prepare(image: Image.Image, limits: ImageLimits) -> Image.Image:
    """On a white background, in colour (RGB) or grayscale (L) as the source was, upscaled 2x when small.

    Colour is kept: tesseract thresholds a colour image itself (Otsu) better than it reads Pillow's
    luminance. Measured (bench/ocr/preprocessing.py, 24 generated spam images, tinted/gradient/noise/
    low-contrast backgrounds, 10-24 px, PNG and JPEG q60): mean similarity to the truth 0.911 in colour,
    0.829 in grayscale (red text on grey noise is lost), 0.794 with the single most contrasted channel,
    0.478 with a global threshold at the mean; so no threshold step either. Colour costs ~20% more time.
    """
    image = ImageOps.exif_transpose(image)  # photos of flyers are often stored rotated
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels are often black underneath: text drawn on them would vanish.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        image = background
    flat = _to_8bit(image)
    factor = upscale_factor(flat.width, flat.height, limits)
    if factor > 1:
        flat = flat.resize((flat.width * factor, flat.height * factor), Image.Resampling.LANCZOS)
    return flat


def _to_8bit(image: Image.Image) -> Image.Image:
    """8-bit L for grayscale sources, RGB for everything else (palette, CMYK, YCbCr...)."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        # 16-bit and float pixels: a plain convert("L") clips everything above 255 to white (text gone);
        # stretch the image's own range to 0..255 instead.
        floats = image.convert("F")
        extrema = floats.getextrema()
        low, high = (float(extrema[0]), float(extrema[1])) if isinstance(extrema[0], (int, float)) else (0.0, 0.0)
        scale = 255.0 / (high - low) if high != low else 0.0
        return floats.point(lambda v: (v - low) * scale).convert("L")
    if image.mode in ("1", "L", "LA", "La"):
        return image.convert("L")
    if image.mode == "P" and _palette_is_gray(image):
        return image.convert("L")
    return image.convert("RGB")


def _palette_is_gray(image: Image.Image) -> bool:
    palette = image.getpalette() or []
    return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))


def upscale_factor(width: int, height: int, limits: ImageLimits) -> int:
    """2 for small images, else 1.

    Measured (tesseract 5.3, 3 lines of spam text, JPEG q75): 8-9 px fonts read at 0.73-0.75
    similarity unscaled and 0.99-1.00 at 2x, for +60..120 ms per image; fonts of 11 px and up read
    the same either way. Large images (photos) are not upscaled: 2x made an 800x600 noise image
    cost 1.2 s instead of 0.37 s for no text.
    """
    if limits.upscale_below_px <= 0 or min(width, height) >= limits.upscale_below_px:
        return 1
    return 2 if width * height * 4 <= limits.max_upscaled_pixels else 1
