from mailgw_libs.service import serve

from .app import build
from .settings import OcrSettings


def main() -> None:
    serve(build(OcrSettings()))


if __name__ == "__main__":
    main()
