"""Test data for the antivirus service: EICAR built at run time, mails with attachments, a small-stream clamd."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


# --- the detection matrix (test_detection.py; printed by bench/antivirus_detection.py) --------------

def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC = _crc_table()


def _zipcrypto(data: bytes, password: bytes, check: int) -> bytes:
    """Traditional PKWARE encryption (APPNOTE 6.1): a real encrypted member, as `zip -e` writes it."""
    keys = [0x12345678, 0x23456789, 0x34567890]

    def update(byte: int) -> None:
        keys[0] = _CRC[(keys[0] ^ byte) & 0xFF] ^ (keys[0] >> 8)
        keys[1] = (keys[1] + (keys[0] & 0xFF)) & 0xFFFFFFFF
        keys[1] = (keys[1] * 134775813 + 1) & 0xFFFFFFFF
        keys[2] = _CRC[(keys[2] ^ (keys[1] >> 24)) & 0xFF] ^ (keys[2] >> 8)

    for byte in password:
        update(byte)
    out = bytearray()
    for byte in bytes(range(11)) + bytes([check]):
        temp = (keys[2] | 2) & 0xFFFF
        out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
        update(byte)
    for byte in data:
        temp = (keys[2] | 2) & 0xFFFF
        out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
        update(byte)
    return bytes(out)


def encrypted_zip(name: str, data: bytes, password: bytes = b"infected") -> bytes:
    """A stored zip member encrypted with ZipCrypto (stdlib zipfile can read but not write these)."""
    import struct
    import zlib
    crc = zlib.crc32(data)
    body = _zipcrypto(data, password, crc >> 24)
    fname = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 1, 0, 0, 0, crc, len(body), len(data), len(fname), 0)
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 1, 0, 0, 0, crc, len(body), len(data),
                          len(fname), 0, 0, 0, 0, 0, 0)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central) + len(fname),
                      len(local) + len(fname) + len(body), 0)
    return local + fname + body + central + fname + end


def seven_zip(name: str, data: bytes) -> bytes:
    import py7zr
    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w") as archive:
        archive.writestr(data, name)
    return buf.getvalue()


def zeros_zip(size: int = 200 * 1024 * 1024) -> bytes:
    """~200 KB that unpacks to `size` bytes of zeros."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf, zf.open("zeros.bin", "w") as fh:
        block = b"\0" * (1024 * 1024)
        for _ in range(size // len(block)):
            fh.write(block)
    return buf.getvalue()


def nested_zips(depth: int, inner_name: str, inner: bytes) -> bytes:
    data = zipped(inner_name, inner)
    for level in range(depth - 1, 0, -1):
        data = zipped(f"level{level}.zip", data)
    return data


def qp_every_byte(data: bytes) -> bytes:
    """Quoted-printable with every byte escaped (=58=35=4F...): valid, and nothing of the original is left."""
    line = "".join(f"={b:02X}" for b in data)
    # Soft line breaks every 72 characters, never inside an escape.
    return b"=\r\n".join(line[i:i + 72].encode() for i in range(0, len(line), 72))


@dataclass(frozen=True)
class DetectionCase:
    name: str
    raw: bytes
    clamd: bool  # clamd (whole message or a part) must find a signature
    layer2: frozenset[str]  # layer-2 symbols that must be among the findings


def _raw_mail(content_type: str, cte: str, body: bytes, extra: str = "") -> bytes:
    head = (f"From: sender@example.org\r\nTo: rcpt@example.com\r\nSubject: test\r\nMessage-ID: <t@example.org>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: {cte}\r\n{extra}\r\n")
    return head.encode() + body + b"\r\n"


def detection_cases(eicar: bytes) -> list[DetectionCase]:
    """Every case of the issue's test list, built at run time (EICAR from its two halves)."""
    docm = zipped_many(("[Content_Types].xml", b"<Types/>"), ("word/document.xml", b"<w:document/>"),
                       ("word/vbaProject.bin", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100))
    octet = "application/octet-stream"
    cases = [
        DetectionCase("EICAR plain (7bit text body)", _raw_mail("text/plain", "7bit", eicar), True,
                      frozenset({"YARA_EICAR_TEST_FILE"})),
        DetectionCase("EICAR base64 attachment", make_mail(attachments=(("eicar.com", octet, eicar),)), True,
                      frozenset({"YARA_EICAR_TEST_FILE", "MIME_BAD_EXTENSION"})),
        DetectionCase("EICAR quoted-printable (every byte =XX)",
                      _raw_mail("text/plain", "quoted-printable", qp_every_byte(eicar)), True,
                      frozenset({"YARA_EICAR_TEST_FILE"})),
        DetectionCase("EICAR in zip", make_mail(attachments=(("a.zip", "application/zip", zipped("a.com", eicar)),)),
                      True, frozenset({"YARA_EICAR_TEST_FILE", "ARCHIVE_EXECUTABLE"})),
        DetectionCase("EICAR in zip in zip", make_mail(attachments=(
            ("outer.zip", "application/zip", zipped("inner.zip", zipped("a.com", eicar))),)),
            True, frozenset({"YARA_EICAR_TEST_FILE", "ARCHIVE_EXECUTABLE"})),
        DetectionCase("EICAR in 7z", make_mail(attachments=(
            ("a.7z", "application/x-7z-compressed", seven_zip("a.com", eicar)),)),
            True, frozenset({"YARA_EICAR_TEST_FILE", "ARCHIVE_EXECUTABLE"})),
        DetectionCase("macro document (docm with vbaProject.bin)", make_mail(attachments=(
            ("letter.docm", "application/vnd.ms-word.document.macroEnabled.12", docm),)),
            False, frozenset({"OFFICE_MACRO"})),
        DetectionCase("EICAR in encrypted zip (ZipCrypto)", make_mail(attachments=(
            ("secret.zip", "application/zip", encrypted_zip("a.com", eicar)),)),
            False, frozenset({"ARCHIVE_ENCRYPTED", "ARCHIVE_EXECUTABLE"})),
        DetectionCase("zip bomb (200 MB of zeros)", make_mail(attachments=(
            ("bomb.zip", "application/zip", zeros_zip()),)), False, frozenset({"ARCHIVE_BOMB"})),
        DetectionCase("EICAR 20 zips deep", make_mail(attachments=(
            ("deep.zip", "application/zip", nested_zips(20, "a.com", eicar)),)), False,
            frozenset({"ARCHIVE_TOO_DEEP"})),
        DetectionCase("clean mail with a zipped report", make_mail(attachments=(
            ("report.zip", "application/zip", zipped("report.txt", b"quarterly numbers\n" * 100)),)),
            False, frozenset()),
    ]
    return cases


def zipped_many(*members: tuple[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="session")
def eicar_cases(eicar: bytes) -> list[DetectionCase]:
    return detection_cases(eicar)
