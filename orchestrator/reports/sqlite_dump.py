"""Run one chunked read of a SQLite file and write each chunk's text to stdout (a child process).

Started by :func:`orchestrator.reports.columnar.read_in_background` as
``python -m orchestrator.reports.sqlite_dump`` with a JSON request on stdin: ``path``, ``sql``
(a ``group_concat`` query with ``:_lo``/``:_hi`` placeholders), ``params`` and ``ranges``. Each
chunk is written as an 8-byte little-endian length and the UTF-8 text. Only the standard library
is imported, so the child starts in a few milliseconds and shares nothing with its parent.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Iterator

_LENGTH = 8


def split_frames(data: bytes) -> Iterator[bytes]:
    """The chunks of a dump, in order.

    >>> list(split_frames((3).to_bytes(8, "little") + b"a,b"))
    [b'a,b']
    """
    at = 0
    while at < len(data):
        size = int.from_bytes(data[at : at + _LENGTH], "little")
        at += _LENGTH
        yield data[at : at + size]
        at += size


def main() -> None:
    request = json.loads(sys.stdin.buffer.read())
    conn = sqlite3.connect(f"file:{request['path']}?mode=ro", uri=True)
    out = sys.stdout.buffer
    try:
        for lo, hi in request["ranges"]:
            text = conn.execute(request["sql"], {**request["params"], "_lo": lo, "_hi": hi})
            value = text.fetchone()[0]
            if value:
                data = value.encode()
                out.write(len(data).to_bytes(_LENGTH, "little"))
                out.write(data)
    finally:
        conn.close()
    out.flush()


if __name__ == "__main__":
    main()
