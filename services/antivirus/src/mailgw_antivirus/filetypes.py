"""What a file really is (by content) and what its name claims to be (by extension).

Content: precise structural checks for the kinds the policy acts on (executables, archives,
Office containers, PDF), then puremagic's magic-number database for everything else (images,
HTML, media, ...). puremagic alone is not enough for the first group: it calls every zip an
Office document and does not validate a PE header, so those checks are ours.

Names: Unicode-normalised (NFKC, so fullwidth dots count as dots), bidi controls and
zero-width characters removed, trailing dots and spaces dropped (Windows ignores them).
"""

from __future__ import annotations

import io
import struct
import unicodedata
from dataclasses import dataclass

import olefile
import puremagic

# Families: what the policy compares. Kinds: finer, for details and archive dispatch.
EXECUTABLE = "executable"
ARCHIVE = "archive"
OFFICE = "office"
PDF = "pdf"
IMAGE = "image"
HTML = "html"
TEXT = "text"
SCRIPT = "script"
UNKNOWN = "unknown"

ARCHIVE_KINDS = frozenset({"zip", "ooxml", "gz", "bz2", "xz", "tar", "7z", "rar"})

_MSI_CLSID = "000C1084-0000-0000-C000-000000000046"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_MACHO_MAGICS = (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe")


# The MIME type reported for a kind found by our own checks (Verdict.attachments' detected_type).
KIND_MIME_TYPES = {
    "pe": "application/vnd.microsoft.portable-executable", "elf": "application/x-executable",
    "macho": "application/x-mach-binary", "msi": "application/x-msi", "ole": "application/x-ole-storage",
    "ooxml": "application/vnd.openxmlformats-officedocument", "zip": "application/zip", "gz": "application/gzip",
    "bz2": "application/x-bzip2", "xz": "application/x-xz", "7z": "application/x-7z-compressed",
    "rar": "application/vnd.rar", "tar": "application/x-tar", "pdf": "application/pdf",
    "script": "text/x-script", "html": "text/html", "text": "text/plain",
}


@dataclass(frozen=True)
class FileType:
    kind: str
    family: str
    label: str = ""
    mime: str = ""  # from puremagic; our own checks leave it empty (see `content_type`)

    @property
    def executable(self) -> bool:
        return self.family == EXECUTABLE

    @property
    def content_type(self) -> str:
        """The MIME type by content, `application/octet-stream` when nothing is known."""
        return self.mime or KIND_MIME_TYPES.get(self.kind, "application/octet-stream")


def _is_pe(data: bytes) -> bool:
    if len(data) < 0x40 or data[:2] != b"MZ":
        return False
    (offset,) = struct.unpack_from("<I", data, 0x3C)
    return 0x40 <= offset <= len(data) - 4 and data[offset:offset + 4] == b"PE\0\0"


def _is_fat_macho(data: bytes) -> bool:
    # 0xCAFEBABE is also a Java class file: there the next field is a version >= 45, here a small arch count.
    if len(data) < 8 or data[:4] != b"\xca\xfe\xba\xbe":
        return False
    (count,) = struct.unpack_from(">I", data, 4)
    return 0 < count < 20


def _ole_kind(data: bytes) -> str:
    try:
        with olefile.OleFileIO(io.BytesIO(data)) as ole:
            clsid = (ole.root.clsid or "").upper() if ole.root is not None else ""
    except Exception:  # noqa: BLE001 - hostile input: any parser error means "not a readable OLE file"
        return "ole"
    return "msi" if clsid == _MSI_CLSID else "ole"


def _is_tar(data: bytes) -> bool:
    return len(data) >= 262 and data[257:262] == b"ustar"


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\0" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")
    printable = sum(1 for c in text if c.isprintable() or c in "\r\n\t\f")
    return printable >= 0.95 * len(text)


def sniff(data: bytes) -> FileType:
    """The type of `data` by content; never raises."""
    head = data[:4096]
    if _is_pe(data):
        return FileType("pe", EXECUTABLE, "PE executable")
    if head.startswith(b"\x7fELF"):
        return FileType("elf", EXECUTABLE, "ELF executable")
    if head[:4] in _MACHO_MAGICS or _is_fat_macho(head):
        return FileType("macho", EXECUTABLE, "Mach-O executable")
    if head.startswith(_OLE_MAGIC):
        kind = _ole_kind(data)
        return FileType(kind, EXECUTABLE, "MSI installer") if kind == "msi" else FileType(kind, OFFICE, "OLE2 document")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        if b"[Content_Types].xml" in data[:65536] or b"[Content_Types].xml" in data[-65536:]:
            return FileType("ooxml", OFFICE, "Office Open XML document")
        return FileType("zip", ARCHIVE, "zip archive")
    if head.startswith(b"\x1f\x8b"):
        return FileType("gz", ARCHIVE, "gzip")
    if head.startswith(b"BZh") and head[3:4].isdigit():
        return FileType("bz2", ARCHIVE, "bzip2")
    if head.startswith(b"\xfd7zXZ\x00"):
        return FileType("xz", ARCHIVE, "xz")
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return FileType("7z", ARCHIVE, "7-Zip archive")
    if head.startswith(b"Rar!\x1a\x07"):
        return FileType("rar", ARCHIVE, "RAR archive")
    if _is_tar(data):
        return FileType("tar", ARCHIVE, "tar archive")
    if b"%PDF-" in head[:1024]:
        return FileType("pdf", PDF, "PDF document")
    if head.startswith(b"#!"):
        return FileType("script", SCRIPT, "script (#!)")
    try:
        matches = puremagic.magic_string(head)
    except (puremagic.PureError, ValueError):
        matches = []
    if matches:
        best = matches[0]
        mime = (best.mime_type or "").lower()
        label = best.name or best.extension
        if mime.startswith("image/"):
            return FileType("image", IMAGE, label, mime)
        if mime == "text/html" or best.extension in (".html", ".htm"):
            return FileType("html", HTML, label, "text/html")
        return FileType(best.extension.lstrip(".") or "other", UNKNOWN, label, mime)
    lowered = head[:1024].lower().lstrip()
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<script" in lowered:
        return FileType("html", HTML, "HTML document")
    if _looks_like_text(head):
        return FileType("text", TEXT, "text")
    return FileType("data", UNKNOWN, "data")


# --- names ---------------------------------------------------------------------------------

# Bidi embedding/override/isolate controls: they make "photo\u202egnp.exe" display as "photoexe.png".
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_INVISIBLE = frozenset("\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u061c") | BIDI_CONTROLS

# Run or install code when opened on Windows (or mount images that hide such files).
BAD_EXTENSIONS = frozenset({
    "exe", "scr", "com", "pif", "bat", "cmd", "cpl", "dll", "msi", "msp", "msc", "js", "jse", "vbs", "vbe",
    "wsf", "wsh", "wsc", "hta", "lnk", "iso", "img", "vhd", "vhdx", "ps1", "psm1", "reg", "jar", "appx",
    "appxbundle", "msix", "application", "gadget", "inf", "scf", "url", "chm", "sct", "xll", "xlam",
    "ppam", "appref-ms", "settingcontent-ms",
})
# Scripts, counted as executables inside archives.
SCRIPT_EXTENSIONS = frozenset({"js", "jse", "vbs", "vbe", "wsf", "wsh", "hta", "ps1", "psm1", "bat", "cmd", "sh"})
# What a "decoy" first extension looks like: something a victim would open without thinking.
DECOY_EXTENSIONS = frozenset({
    "pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "odt", "ods", "rtf", "txt", "csv", "jpg", "jpeg",
    "png", "gif", "bmp", "tif", "tiff", "mp3", "mp4", "avi", "mov", "wav", "zip", "rar", "7z", "htm", "html",
    "eml", "msg", "xml", "json",
})
# What an extension promises about the content (only the families that a mismatch check compares).
EXTENSION_FAMILIES: dict[str, str] = {
    **{e: IMAGE for e in ("jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "webp")},
    "pdf": PDF,
    **{e: OFFICE for e in ("doc", "docx", "docm", "xls", "xlsx", "xlsm", "ppt", "pptx", "pptm")},
    **{e: TEXT for e in ("txt", "csv", "log")},
    **{e: ARCHIVE for e in ("zip", "7z", "rar", "gz", "tgz", "tar", "bz2", "xz")},
    **{e: EXECUTABLE for e in ("exe", "dll", "scr", "com", "pif", "cpl", "sys", "msi", "bin", "elf", "so",
                               "dylib", "app", "run", "ocx", "drv", "efi", "out")},
}


@dataclass(frozen=True)
class Name:
    raw: str
    clean: str
    extensions: tuple[str, ...]
    bidi: bool

    @property
    def extension(self) -> str:
        return self.extensions[-1] if self.extensions else ""


def parse_name(raw: str) -> Name:
    base = raw.replace("\\", "/").rsplit("/", 1)[-1]
    normal = unicodedata.normalize("NFKC", base)
    bidi = any(c in BIDI_CONTROLS for c in normal)
    clean = "".join(c for c in normal if c not in _INVISIBLE).rstrip(". \t")
    pieces = clean.split(".")
    exts = tuple(p.strip().lower() for p in pieces[1:]) if len(pieces) > 1 else ()
    return Name(raw=raw, clean=clean, extensions=exts, bidi=bidi)
