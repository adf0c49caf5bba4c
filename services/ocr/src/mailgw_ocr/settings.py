from pydantic_settings import SettingsConfigDict

from mailgw_libs.settings import ServiceSettings


class OcrSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAILGW_OCR_", extra="ignore", populate_by_name=True)

    http_port: int = 9104
    # tesseract -l value: installed traineddata names joined by "+", e.g. "eng+deu".
    languages: str = "eng"
    # One tesseract run may take at most this long; past it the image is OCR_FAILED.
    tesseract_timeout_s: float = 15.0
    # All images of one message are read within this; later ones are OCR_FAILED (bounds how long a message
    # holds its partition, whatever its images).
    message_timeout_s: float = 30.0
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
    # Images inside PDF attachments (pypdf): PDFs up to this size, their first pages, at most this many images.
    pdf_enabled: bool = True
    pdf_max_bytes: int = 10 * 1024 * 1024
    pdf_max_pages: int = 5
    pdf_max_images: int = 3
    # OCR text cached in Redis (MAILGW_REDIS_URL) by sha256 of the image.
    cache_enabled: bool = True
    cache_ttl_s: int = 7 * 24 * 3600
    cache_prefix: str = "mailgw:ocr:"
    redis_timeout_s: float = 0.5
    # OCR_SPAM_TEXT: the body rules on the images' text reach the threshold.
    spam_text_threshold: float = 4.0
    spam_text_score: float = 3.0
    # IMAGE_ONLY_MAIL: images read, and the message's own visible text is at most this many characters.
    image_only_max_chars: int = 50
    image_only_score: float = 2.0
    # Bayes (mailgw_libs.bayes, the antispam database in Redis) on the images' text: OCR_BAYES_xx.
    bayes_enabled: bool = True
    bayes_database: str = "default"
    bayes_min_text_chars: int = 40
