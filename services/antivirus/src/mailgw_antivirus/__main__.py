from mailgw_libs.service import serve

from .app import build
from .settings import AntivirusSettings


def main() -> None:
    serve(build(AntivirusSettings()))


if __name__ == "__main__":
    main()
