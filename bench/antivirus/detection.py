"""The detection table of issue 5: every test case through layer 1 (clamd on the whole message, clamd on
each decoded part) and layer 2, against a clamd of its own with the project's signatures (deploy/clamav/).

    .venv/bin/python bench/antivirus/detection.py

Needs clamd (Debian clamav-daemon) and, for the second table, clamav-testfiles.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import tempfile
import time
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from types import ModuleType

from mailgw_antivirus.app import make_policy
from mailgw_antivirus.scanner import ClamdScanner, ScanResult, distinct_parts, merge
from mailgw_antivirus.settings import AntivirusSettings
from mailgw_devstack.infra import start_clamd

ROOT = Path(__file__).resolve().parents[2]
TESTFILES = Path("/usr/share/clamav-testfiles")


def _test_data() -> ModuleType:
    """The cases live with the tests (services/antivirus/tests/conftest.py): one definition for both."""
    spec = importlib.util.spec_from_file_location("antivirus_test_data", ROOT / "services/antivirus/tests/conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _show(result: ScanResult) -> str:
    if result.viruses:
        return ", ".join(result.viruses)
    return f"error: {result.error[:40]}" if result.error else "clean"


async def main() -> None:
    data = _test_data()
    eicar = (data._EICAR_HEAD + data._EICAR_TAIL).encode("ascii")
    policy = make_policy(AntivirusSettings())
    with tempfile.TemporaryDirectory(prefix="avb") as state:
        clamd = start_clamd(Path(state))
        try:
            scanner = ClamdScanner("127.0.0.1", clamd.port, 60.0)
            print("| case | clamd, whole message | clamd, decoded parts | layer 2 symbols | ms |")
            print("|---|---|---|---|---|")
            for case in data.detection_cases(eicar):
                started = time.perf_counter()
                whole = await scanner.scan_async(case.raw)
                parts = [(w, await scanner.scan_async(p)) for w, p in distinct_parts(case.raw, 50)]
                layer2 = await policy.scan_async(case.raw)
                ms = (time.perf_counter() - started) * 1000
                symbols = ", ".join(h.name for h in layer2.hits) or "-"
                print(f"| {case.name} | {_show(whole)} | {_show(merge(parts))} | {symbols} | {ms:.0f} |")
            down = await ClamdScanner("127.0.0.1", 1, 2.0).scan_message(data.make_mail())
            print(f"| clamd down (port 1) | {'AV_FAIL' if down.failed else '?'} | | | |")
            if TESTFILES.is_dir():  # noqa: ASYNC240 - a script
                print("\n| clamav-testfiles file (attached, base64) | clamd verdict |")
                print("|---|---|")
                found = 0
                files = sorted(p for p in TESTFILES.iterdir() if p.is_file())  # noqa: ASYNC240 - setup, not the scan
                for path in files:
                    msg = EmailMessage()
                    msg["Subject"] = "test"
                    msg.set_content("see attachment")
                    msg.add_attachment(path.read_bytes(), maintype="application", subtype="octet-stream",
                                       filename=path.name)
                    result = await scanner.scan_message(msg.as_bytes(policy=SMTP))
                    found += bool(result.viruses)
                    print(f"| {path.name} | {_show(result)} |")
                print(f"\n{found}/{len(files)} clamav-testfiles detected")
            await scanner.close()
        finally:
            clamd.stop()


if __name__ == "__main__":
    asyncio.run(main())
