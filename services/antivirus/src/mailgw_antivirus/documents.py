"""Active content in documents: VBA macros in OLE Office files, JavaScript and launch actions in PDFs.

OOXML documents (docm, xlsm, ...) are zips: the archive walk finds their `vbaProject.bin`.
OLE documents (doc, xls, ppt) are checked with oletools' VBA_Parser on bytes already in
memory, and olefile's stream names when oletools cannot parse them. VBA_Parser is never given
a zip: it would unpack the members itself, without our limits.
"""

from __future__ import annotations

import io
import logging
import re
import zlib

import olefile
from oletools.olevba import VBA_Parser

from .archives import Budget

log = logging.getLogger("mailgw.antivirus.documents")
logging.getLogger("olevba").setLevel(logging.CRITICAL)  # it logs every odd stream of hostile input

_VBA_STREAMS = frozenset({"_vba_project", "_vba_project_cur", "macros", "vba"})


def ole_has_macros(data: bytes) -> bool:
    """Does this OLE2 file carry a VBA project?"""
    try:
        parser = VBA_Parser("attachment", data=data, relaxed=True)
        try:
            if parser.detect_vba_macros():
                return True
        finally:
            parser.close()
    except Exception:  # oletools on hostile input may raise anything; fall back to stream names
        log.debug("VBA_Parser failed, falling back to olefile", exc_info=True)
    try:
        with olefile.OleFileIO(io.BytesIO(data)) as ole:
            return any(part.lower() in _VBA_STREAMS for entry in ole.listdir(streams=True, storages=True)
                       for part in entry)
    except Exception:  # noqa: BLE001 - not a readable OLE file: no macros to run either
        return False


# A PDF name token, with #xx escapes (so /J#61vaScript is /JavaScript).
_NAME = re.compile(rb"/([A-Za-z0-9#_.+-]{1,64})")
_STREAM = re.compile(rb"stream\r?\n")
_RISKY = {"JavaScript": "JavaScript", "JS": "JavaScript", "Launch": "Launch action"}


def _names(data: bytes) -> set[str]:
    found: set[str] = set()
    for match in _NAME.finditer(data):
        token = match.group(1)
        if b"#" in token:
            token = re.sub(rb"#([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), token)
        name = token.decode("latin-1")
        if name in _RISKY or name == "OpenAction" or name == "AA":
            found.add(name)
    return found


def pdf_active_content(data: bytes, budget: Budget, max_streams: int = 2000,
                       max_stream_bytes: int = 8 * 1024 * 1024) -> list[str]:
    """What in this PDF runs code or programs: ['JavaScript', 'Launch action', 'OpenAction'] or []."""
    names = _names(data)
    streams = 0
    for match in _STREAM.finditer(data):
        if streams >= max_streams:
            break
        budget.check_time()
        dictionary = data[max(0, match.start() - 512): match.start()]
        if b"FlateDecode" not in dictionary and b"/Fl" not in dictionary:
            continue
        streams += 1
        end = data.find(b"endstream", match.end())
        body = data[match.end(): end if end != -1 else len(data)]
        d = zlib.decompressobj()
        try:
            inflated = d.decompress(body, max_stream_bytes)  # never more than the cap, whatever it declares
        except zlib.error:
            continue
        budget.take(len(inflated), 0, 1)  # counts towards the message's unpack budget (no ratio for PDFs)
        names |= _names(inflated)
    findings = sorted({_RISKY[n] for n in names if n in _RISKY})
    if findings and ("OpenAction" in names or "AA" in names):
        findings.append("automatic action")
    return findings
