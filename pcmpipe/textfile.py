"""Reading the text files a user writes (settings YAML, pipeline files, id lists) as UTF-8, in one line if not.

Editors on Windows save UTF-8 with a byte-order mark and older tools save Latin-1; the first must read as
if it were plain UTF-8, the second must name the file and where the first undecodable byte is, not end in a
UnicodeDecodeError traceback.
"""

from __future__ import annotations

from pathlib import Path

from pcmpipe.errors import UserError


def read_text(path: str | Path, what: str = "file") -> str:
    """The file's text, decoded as UTF-8 with an optional BOM; UserError naming the file and the byte offset."""
    path = Path(path)
    return decode_text(path.read_bytes(), path, what)


def decode_text(data: bytes, path: str | Path, what: str = "file") -> str:
    """`data`, the bytes of file `path`, as text (see `read_text`)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        # the offset counts from the start of the file, BOM included, as a hex editor shows it
        offset = e.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        raise UserError(
            f"{what} {path} is not UTF-8: byte 0x{data[offset]:02x} at offset {offset}; save it as UTF-8"
        ) from None
