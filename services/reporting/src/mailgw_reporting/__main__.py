from mailgw_libs.service import serve

from .app import build
from .settings import ReportingSettings


def main() -> None:
    serve(build(ReportingSettings()))


if __name__ == "__main__":
    main()
