from mailgw_libs.service import serve

from .app import build
from .settings import IngressSettings


def main() -> None:
    serve(build(IngressSettings()))


if __name__ == "__main__":
    main()
