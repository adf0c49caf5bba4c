from pydantic_settings import SettingsConfigDict

from mailgw_libs.settings import ServiceSettings


class OcrSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAILGW_OCR_", extra="ignore", populate_by_name=True)

    http_port: int = 9104
    # tesseract -l value: installed traineddata names joined by "+", e.g. "eng+deu".
    languages: str = "eng"
    # One tesseract run may take at most this long; past it the image is OCR_FAILED.
    tesseract_timeout_s: float = 15.0
    # Images read (or failed) per message; more are ignored. Bounds CPU per message.
    max_images: int = 5
    # Parallel tesseract processes for the images of one message (tesseract is single-threaded here).
    workers: int = 2
    # Smaller images are logos and tracking pixels: skipped, not read.
    min_image_bytes: int = 1024
    min_image_side_px: int = 32
    # Larger files are skipped; more pixels than this is treated as a decompression bomb (OCR_FAILED).
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    # Images whose shorter side is below this are upscaled 2x before OCR (small fonts read far better);
    # 0 turns it off. The upscaled image may have at most max_upscaled_pixels.
    upscale_below_px: int = 400
    max_upscaled_pixels: int = 4_000_000
    # Recognised text beyond this many characters per image is not scored.
    max_text_chars: int = 100_000
