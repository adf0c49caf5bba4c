"""`make run`: the whole gateway locally until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from .infra import REPO, StartError
from .stack import Stack, StackPorts


def main() -> int:
    parser = argparse.ArgumentParser(prog="mailgw-devstack")
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--state", type=Path, default=REPO / "var")
    args = parser.parse_args()

    stack = Stack(state=args.state, ports=StackPorts.fixed())
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    try:
        stack.check_ports()
        print("starting broker, Redis, clamd, SMTP sink and services...", flush=True)
        stack.start()
    except StartError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        stack.stop()
        return 1
    p = stack.ports
    print(f"""
mail security gateway is running (started in {time.monotonic() - started:.1f}s)

  send mail         swaks --server 127.0.0.1:{p.smtp} --to someone@example.com
  delivered mail    {stack.delivered_dir}/new/   (downstream sink on 127.0.0.1:{p.sink})
  statistics        curl 127.0.0.1:{p.reporting}/api/v1/stats/summary
  tracking          curl '127.0.0.1:{p.reporting}/api/v1/tracking?recipient=someone@example.com'
  quarantine        curl 127.0.0.1:{p.reporting}/api/v1/quarantine
  kafka (Tansu)     127.0.0.1:{stack.infra['kafka'].port}
  redis             127.0.0.1:{stack.infra['redis'].port}
  clamd             127.0.0.1:{stack.infra['clamd'].port}
  health/metrics    """ + "  ".join(f"{n}:{port}" for n, port in p.health.items()) + f"""
  logs              {stack.state / 'logs'}/
  STARTTLS          self-signed certificate in {stack.tls_dir}/
  greylisting       off here (on in production): MAILGW_INGRESS_GREYLISTING=true make run
                    (until a configuration is published: then `ingress.greylisting.enabled` of
                    `mailgw config apply FILE` decides, and is on unless the file says `enabled: false`)

Ctrl-C stops everything.
""", flush=True)
    try:
        while not stopping:
            dead = [n for n, s in {**stack.services, **stack.infra}.items() if not s.alive()]
            if dead:
                print(f"make run: {', '.join(dead)} stopped unexpectedly; see {stack.state / 'logs'}", file=sys.stderr)
                break
            time.sleep(0.5)
    finally:
        print("stopping...", flush=True)
        stack.stop()
        print("stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
