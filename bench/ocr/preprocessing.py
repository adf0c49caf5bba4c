"""Does a preprocessing step improve recognition? Generated spam images (backgrounds: tinted, gradient, noise,
low contrast; 10/14/24 px fonts; PNG and JPEG q60) read by tesseract after three pipelines:

- `rgb`: the decoded image as it is (tesseract binarises internally, Otsu);
- `gray`, `gray+2x`, `rgb+2x`: grayscale (Pillow's luminance) and/or the 2x upscale of small images;
- `service`: what the service does (`images.prepare`);
- `service+threshold`: the same in grayscale, then a global threshold at the image's mean (a fixed binarisation).

Prints the mean similarity (difflib ratio) of the text read to the truth, and the mean time per image.

    .venv/bin/python bench/ocr/preprocessing.py
"""

from __future__ import annotations

import difflib
import io
import random
import statistics
import time
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageFont, ImageStat

from mailgw_ocr.images import ImageLimits, prepare, upscale_factor
from mailgw_ocr.tesseract import Tesseract, limit_threads

TRUTH = ("CHEAP VIAGRA NO PRESCRIPTION NEEDED", "Limited time offer - buy now today")
DEJAVU = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def background(kind: str, size: tuple[int, int]) -> Image.Image:
    if kind == "tinted":
        return Image.new("RGB", size, (255, 246, 210))
    if kind == "gradient":
        g = Image.linear_gradient("L").rotate(90).resize(size)
        return Image.merge("RGB", (g, g.point(lambda v: 255 - v // 2), Image.new("L", size, 200)))
    if kind == "noise":  # seeded: every run and every pipeline sees the same pixels
        rng = random.Random(size[0] * size[1])
        n = Image.frombytes("L", size, bytes(rng.randrange(150, 236) for _ in range(size[0] * size[1])))
        return Image.merge("RGB", (n, n, n))
    return Image.new("RGB", size, (200, 200, 200))  # low contrast: grey ink on grey


def sample(kind: str, px: int, fmt: str) -> bytes:
    font = ImageFont.truetype(DEJAVU, px)
    size = (int(px * 0.62 * max(map(len, TRUTH))) + 40, int(px * 1.6 * len(TRUTH)) + 40)
    image = background(kind, size)
    ink = (150, 150, 150) if kind == "low-contrast" else (160, 20, 20)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(TRUTH):
        draw.text((20, 20 + i * int(px * 1.6)), line, fill=ink, font=font)
    buf = io.BytesIO()
    image.save(buf, fmt, **({"quality": 60} if fmt == "JPEG" else {}))
    return buf.getvalue()


def upscaled(image: Image.Image, limits: ImageLimits) -> Image.Image:
    factor = upscale_factor(image.width, image.height, limits)
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.LANCZOS)


def best_channel(rgb: Image.Image) -> Image.Image:
    """The colour channel with the most contrast (largest standard deviation)."""
    deviations = ImageStat.Stat(rgb).stddev
    return rgb.getchannel(deviations.index(max(deviations)))


def threshold(gray: Image.Image) -> Image.Image:
    mean = ImageStat.Stat(gray).mean[0]
    return gray.point(lambda v: 255 if v > mean else 0)


def main() -> None:
    limit_threads()
    limits = ImageLimits()
    engine = Tesseract("eng", 30.0)
    pipelines: dict[str, Callable[[Image.Image], Image.Image]] = {
        "rgb": lambda im: im.convert("RGB"),
        "gray": lambda im: im.convert("L"),
        "gray+2x": lambda im: upscaled(im.convert("L"), limits),
        "rgb+2x": lambda im: upscaled(im.convert("RGB"), limits),
        "channel+2x": lambda im: upscaled(best_channel(im.convert("RGB")), limits),
        "service": lambda im: prepare(im, limits),
        "service+threshold": lambda im: threshold(prepare(im, limits).convert("L")),
    }
    scores: dict[str, list[float]] = {name: [] for name in pipelines}
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    truth = " ".join(TRUTH).lower()
    for kind in ("tinted", "gradient", "noise", "low-contrast"):
        for px in (10, 14, 24):
            for fmt in ("PNG", "JPEG"):
                data = sample(kind, px, fmt)
                row = []
                for name, pipeline in pipelines.items():
                    with Image.open(io.BytesIO(data)) as image:
                        image.load()
                        started = time.perf_counter()
                        text = engine.read(pipeline(image))
                        times[name].append(time.perf_counter() - started)
                    ratio = difflib.SequenceMatcher(None, " ".join(text.split()).lower(), truth).ratio()
                    scores[name].append(ratio)
                    row.append(f"{ratio:.2f}")
                print(f"{kind:13} {px:2} px {fmt:4}  " + "  ".join(f"{n}={r}" for n, r in zip(pipelines, row, strict=True)))
    print()
    for name in pipelines:
        print(f"{name:18} mean similarity {statistics.mean(scores[name]):.3f}, "
              f"min {min(scores[name]):.2f}, {statistics.mean(times[name]) * 1000:.0f} ms per image")


if __name__ == "__main__":
    main()
