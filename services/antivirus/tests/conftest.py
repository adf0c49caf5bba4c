"""Test data for the antivirus service: EICAR built at run time, mails with attachments, a small-stream clamd."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest

from mailgw_devstack.infra import Managed, free_port, spawn, wait_port

# The EICAR test file in two halves, so that no file of the repository contains it whole
# (a virus scanner on a developer machine would quarantine the test file otherwise).
_EICAR_HEAD = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$"
_EICAR_TAIL = "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SIGNATURES = Path(__file__).resolve().parents[3] / "deploy" / "clamav"


@pytest.fixture(scope="session")
def eicar() -> bytes:
    return (_EICAR_HEAD + _EICAR_TAIL).encode("ascii")


def make_mail(body: str = "Hello,\nplease find the file attached.\n",
              attachments: tuple[tuple[str, str, bytes], ...] = ()) -> bytes:
    """An RFC 5322 message with (filename, content type, bytes) attachments, as a client would send it."""
    msg = EmailMessage()
    msg["From"] = "sender@example.org"
    msg["To"] = "rcpt@example.com"
    msg["Subject"] = "test"
    msg["Message-ID"] = "<test@example.org>"
    msg.set_content(body)
    for filename, ctype, data in attachments:
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=SMTP)


@pytest.fixture(scope="session")
def mail() -> Callable[..., bytes]:
    return make_mail


def zipped(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="session")
def zip_of() -> Callable[[str, bytes], bytes]:
    return zipped


@pytest.fixture(scope="session")
def small_clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Managed]:
    """A clamd of its own whose StreamMaxLength is 1 MB, to see how a too-large stream is answered."""
    state = tmp_path_factory.mktemp("clamd-small")
    db = state / "db"
    db.mkdir()
    for sig in SIGNATURES.glob("*.ndb"):
        (db / sig.name).write_bytes(sig.read_bytes())
    port = free_port()
    log = state / "clamd.log"
    conf = state / "clamd.conf"
    conf.write_text(f"TCPSocket {port}\nTCPAddr 127.0.0.1\nDatabaseDirectory {db}\nLogFile {log}\n"
                    "Foreground true\nStreamMaxLength 1M\nMaxThreads 2\nSelfCheck 0\nBytecode false\n")
    proc = spawn("clamd", ["clamd", "-c", str(conf)], state / "clamd.out")
    server = Managed("clamd-small", port, log, proc=proc)
    try:
        wait_port(port, 60, proc, "clamd (1 MB stream limit)")
        yield server
    finally:
        server.stop()
