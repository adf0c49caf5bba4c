from mailgw_libs.service import serve

from .app import build
from .settings import RulesSettings


def main() -> None:
    serve(build(RulesSettings()))


if __name__ == "__main__":
    main()
