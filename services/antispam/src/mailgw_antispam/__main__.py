from mailgw_libs.service import serve

from .app import build
from .settings import AntispamSettings


def main() -> None:
    serve(build(AntispamSettings()))


if __name__ == "__main__":
    main()
