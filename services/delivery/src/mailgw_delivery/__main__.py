from mailgw_libs.service import serve

from .app import build
from .settings import DeliverySettings


def main() -> None:
    serve(build(DeliverySettings()))


if __name__ == "__main__":
    main()
