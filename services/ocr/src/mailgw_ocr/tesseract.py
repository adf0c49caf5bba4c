"""tesseract through pytesseract: one subprocess per image, with a timeout."""

from __future__ import annotations

import os

import pytesseract
from PIL import Image

from mailgw_libs import bus

from .images import ImageFailed


class TesseractMissing(bus.TransientError):
    """The tesseract binary is not there: an installation problem, so redeliver instead of failing the image."""


def limit_threads() -> None:
    """OpenMP threads in tesseract cost more than they gain on few cores (measured ~280 ms vs ~205 ms
    per image on 2 cores); parallelism comes from several images at once instead. Set before the first
    run: pytesseract passes os.environ to each tesseract process. An explicit value is kept."""
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")


class Tesseract:
    def __init__(self, languages: str = "eng", timeout_s: float = 15.0) -> None:
        self.languages = languages
        self.timeout_s = timeout_s

    def read(self, image: Image.Image) -> str:
        """The text of `image`. Blocking: call it in an executor. Raises ImageFailed or TesseractMissing."""
        try:
            return str(pytesseract.image_to_string(image, lang=self.languages, timeout=self.timeout_s))
        except pytesseract.TesseractNotFoundError as exc:
            raise TesseractMissing(str(exc)) from exc
        except pytesseract.TesseractError as exc:
            raise ImageFailed(f"tesseract failed: {exc.message or exc.status}".strip()) from exc
        except RuntimeError as exc:  # pytesseract's only way of saying "timeout"
            if "timeout" in str(exc).lower():
                raise ImageFailed(f"tesseract timed out after {self.timeout_s:g} s") from exc
            raise

    def check(self) -> tuple[bool, str]:
        """Readiness: the binary runs and every configured language is installed. Blocking."""
        try:
            version = pytesseract.get_tesseract_version()
            installed = set(pytesseract.get_languages())
        except (OSError, SystemExit) as exc:  # SystemExit: pytesseract's answer to an unparsable version
            return False, f"tesseract not usable: {exc}"
        missing = [lang for lang in self.languages.split("+") if lang not in installed]
        if missing:
            return False, f"tesseract {version}: languages not installed: {', '.join(missing)}"
        return True, f"tesseract {version} ({self.languages})"
