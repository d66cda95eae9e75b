"""The child process that reads the run's customer batches as Arrow columns.

``python -m orchestrator.storage.batch_server``, with the database (``sqlite:`` and a file's
path, or ``postgresql:`` and a libpq connection string) in ``ORCH_BATCH_SERVER_URL``, reads
requests from stdin (one JSON line each: the SQL with positional parameters, their values, the
field type of each attribute column) and answers each on stdout with one frame: a code byte,
an 8-byte length and the payload:

- ``D``: the batch as an Arrow IPC stream (attribute columns in their field's Arrow type;
  with a ``salt``, a last column of the ids' ``customer_keys``, hashed here beside the run);
- ``B``: some value does not have its field's type (the parent reads that batch row by row,
  which names the value in its error);
- ``E``: the query failed (the payload is the message; the parent reads that batch itself).

It runs ADBC's SQLite or PostgreSQL driver, which builds the Arrow columns in C (PostgreSQL's
in its binary COPY format). It is a process of its own because the SQLite driver carries its
own copy of SQLite: two copies in one process do not see each other's POSIX locks, and the one
that closes the database last may truncate the WAL index the other has mapped (the run died of
SIGBUS that way). Across processes they lock as any two
SQLite clients do. It only reads, and exits at the end of its input.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.engine.hashing import customer_keys

HEADER = struct.Struct("<cQ")
URL_VARIABLE = "ORCH_BATCH_SERVER_URL"


def as_field(arr: pa.Array, dtype: str) -> pa.Array | None:
    """``json_extract``'s values as the field's Arrow type, or None when some value has another
    type (the SQL checks the JSON types too). SQLite gives JSON booleans as 1 and 0.

    >>> as_field(pa.array([1, 0, None]), "bool").to_pylist()
    [True, False, None]
    >>> as_field(pa.array(["x"]), "number") is None
    True
    """
    if arr.null_count == len(arr):
        return pa.nulls(len(arr))
    kind = arr.type
    if dtype == "number":
        return arr if pa.types.is_integer(kind) or pa.types.is_floating(kind) else None
    if dtype == "bool":  # PostgreSQL's are booleans; SQLite's 1 and 0 (the SQL checked they
        if pa.types.is_boolean(kind):  # were JSON booleans)
            return arr
        return pc.cast(arr, pa.bool_()) if pa.types.is_integer(kind) else None
    return arr if pa.types.is_string(kind) else None


def answer(conn: Any, request: dict[str, Any], *, sqlite: bool) -> tuple[bytes, Any]:
    """The frame code and payload for one request."""
    cur = conn.cursor()
    try:
        if sqlite:  # one Arrow batch for the whole result: the driver infers each column's
            # type from the rows of a batch, and a later batch of another type would be an error
            cur.adbc_statement.set_options(
                **{"adbc.sqlite.query.batch_rows": str(max(int(request["limit"]), 1))}
            )
        cur.execute(request["sql"], tuple(request["params"]))
        table = cur.fetch_arrow_table()
    except Exception as exc:  # noqa: BLE001 (the parent reads the batch itself and reports)
        return b"E", str(exc).encode()
    finally:
        cur.close()
    columns = [c.combine_chunks() for c in table.columns]
    types = request["types"]
    if types and pc.max(columns[1 + len(types)]).as_py():  # some value of another JSON type
        return b"B", b""
    for i, dtype in enumerate(types):
        typed = as_field(columns[1 + i], dtype)
        if typed is None:
            return b"B", b""
        columns[1 + i] = typed
    if request.get("salt") is not None:  # the ids' keys, hashed here beside the run
        keys = customer_keys(columns[0].to_pylist(), request["salt"])
        columns.append(pa.array(keys, pa.uint64()))
    out = pa.Table.from_arrays(columns, names=[f"c{i}" for i in range(len(columns))])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, out.schema) as writer:
        writer.write_table(out)
    return b"D", sink.getvalue()


def connect(url: str) -> tuple[Any, bool]:
    """An autocommit connection (each batch reads what is committed) and whether it is SQLite;
    ``url`` is ``postgresql:`` and a libpq connection string, or ``sqlite:`` and a path."""
    kind, _, address = url.partition(":")
    if kind == "postgresql":
        import adbc_driver_postgresql.dbapi as pg

        return pg.connect(address, autocommit=True), False
    import adbc_driver_sqlite.dbapi as lite

    conn = lite.connect(address, autocommit=True)
    cur = conn.cursor()
    cur.execute("PRAGMA busy_timeout = 30000")
    cur.close()
    return conn, True


def serve(url: str, requests: BinaryIO, replies: BinaryIO) -> None:
    conn, sqlite = connect(url)
    try:
        for line in requests:
            code, payload = answer(conn, json.loads(line), sqlite=sqlite)
            view = memoryview(payload)
            replies.write(HEADER.pack(code, view.nbytes))
            replies.write(view)
            replies.flush()
    except BrokenPipeError:  # the run closed its end: it needs nothing more
        pass
    finally:
        conn.close()


if __name__ == "__main__":
    try:
        serve(os.environ[URL_VARIABLE], sys.stdin.buffer, sys.stdout.buffer)
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    finally:  # no flush of a closed pipe at exit
        sys.stdout = None
