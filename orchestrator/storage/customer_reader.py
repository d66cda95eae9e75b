"""The run's customer batches as Arrow columns, read in C, one batch ahead.

The run reads its batches through a child process (``orchestrator.storage.batch_server``) that
runs ADBC's SQLite or PostgreSQL driver: the database takes the attributes the plan needs out
of each row's JSON (``json_extract``, ``->>``) and the driver hands the batch back as Arrow
columns, so no Python object is made per customer and field (the row path
spent about half of a 1M-customer run making and transposing them). The child reads the next
batch while this process decides and writes the one in hand. The row path (`load_customers`)
reads everything else: an in-memory SQLite, a batch whose values do not have their
field's type (it names the bad value in its error), and the rest of a run whose child died.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from orchestrator.rules.parser import NAME_PATTERN
from orchestrator.storage.batch_server import HEADER, URL_VARIABLE
from orchestrator.storage.bulk import collation
from orchestrator.storage.run_repo import NAMED_PARAM, RawBatch, customer_query, load_customers

log = logging.getLogger("orch.run")

_Key = tuple[str | None, int, str | None, bool]


class CustomerReader:
    """Batches of customers with their ``attributes`` (name -> field type) and computed
    ``features``, columnar where the database allows; open it once per partition of a run and
    close it (``with``) at the end.

    The first batch is read row by row while the child starts (about 0.3 s), and the child only
    starts once a full batch says there is more: a run of one batch never waits for it."""

    def __init__(
        self,
        engine: sa.Engine,
        attributes: Mapping[str, str],
        features: Sequence[str],
        *,
        columnar: bool = True,
        salt: str | None = None,
    ) -> None:
        self.attributes = dict(attributes)
        self.features = list(features)
        self.salt = salt  # the child hashes the ids' keys with it (`customer_keys`)
        ok = all(NAME_PATTERN.fullmatch(n) for n in self.attributes)
        self._dialect = engine.dialect.name
        self._pg = self._dialect == "postgresql"
        self._url = _address(engine) if columnar and ok else None  # None: row by row
        self._child: subprocess.Popen[bytes] | None = None
        self._pending: _Key | None = None

    @property
    def columnar(self) -> bool:
        """Whether the batches after the first come as Arrow columns."""
        return self._url is not None

    def load(
        self,
        conn: sa.Connection,
        *,
        after: str | None,
        limit: int,
        upto: str | None = None,
        with_state: bool = False,
    ) -> RawBatch:
        """The next ``limit`` customers after ``after`` (up to ``upto``); ``conn`` reads them
        when the columnar path cannot."""
        batch = self._columnar((after, limit, upto, with_state)) if self._child else None
        if batch is None:
            batch = load_customers(
                conn,
                after=after,
                limit=limit,
                upto=upto,
                feature_names=self.features,
                attribute_names=list(self.attributes),
                with_state=with_state,
            )
        if self._url is not None and len(batch) == limit:  # the next, while this is decided
            try:
                if self._child is None:
                    self._child = _start(self._url)
                self._request((batch.ids[-1], limit, upto, with_state))
            except OSError as exc:
                self._lost(exc)
        return batch

    def _lost(self, exc: BaseException) -> None:
        log.warning("the batch reader stopped (%s); reading row by row from here", exc)
        self.close()
        self._url = None

    def _columnar(self, key: _Key) -> RawBatch | None:
        try:
            if self._pending is not None and self._pending != key:
                self._receive()  # read ahead for another place: drop it
                self._pending = None
            if self._pending is None:
                self._request(key)
            self._pending = None
            code, payload = self._receive()
        except (OSError, EOFError, ValueError) as exc:
            self._lost(exc)
            return None
        if code == b"E":  # unexpected: the row path reads the batch (and reports if it fails)
            log.warning("the batch reader failed: %s", payload.decode(errors="replace"))
        if code != b"D":
            return None
        table = pa.ipc.open_stream(payload).read_all()
        cols = [c.combine_chunks() for c in table.columns]
        names = list(self.attributes)
        base = 1 + (len(names) + 1 if names else 1)  # the attributes and their check, or NULL
        return RawBatch(
            cols[0].to_pylist(),
            {name: cols[1 + i] for i, name in enumerate(names)},
            {name: cols[base + j] for j, name in enumerate(self.features)},
            cols[base + len(self.features)].to_pylist() if key[3] else None,
            keys=None if self.salt is None else cols[-1].to_numpy(),
            key_salt=self.salt,
        )

    def _request(self, key: _Key) -> None:
        after, limit, upto, with_state = key
        names = list(self.attributes)
        sql, params = customer_query(
            collation(self._dialect),
            attribute_select(self.attributes, postgresql=self._pg),
            self.features,
            after=after,
            limit=limit,
            upto=upto,
            with_state=with_state,
        )
        order: list[str] = []

        def qmark(m: re.Match[str]) -> str:  # the drivers bind by position
            order.append(m.group(1))
            return f"${len(order)}" if self._pg else "?"

        sql = NAMED_PARAM.sub(qmark, sql)
        request = {
            "sql": sql,
            "params": [params[k] for k in order],
            "types": [self.attributes[n] for n in names],
            "limit": limit,
            "salt": self.salt,
        }
        assert self._child is not None and self._child.stdin is not None
        self._child.stdin.write(json.dumps(request).encode() + b"\n")
        self._child.stdin.flush()
        self._pending = key

    def _receive(self) -> tuple[bytes, bytes]:
        assert self._child is not None and self._child.stdout is not None
        out = self._child.stdout
        head = out.read(HEADER.size)
        if len(head) < HEADER.size:
            raise EOFError("the batch reader exited")
        code, size = HEADER.unpack(head)
        payload = out.read(size)
        if len(payload) < size:
            raise EOFError("the batch reader exited mid-batch")
        return code, payload

    def close(self) -> None:
        child, self._child, self._pending = self._child, None, None
        if child is None:
            return
        for stream in (child.stdin, child.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def __enter__(self) -> CustomerReader:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# The JSON types a field's values may have (``null`` too: a null or missing value), as
# SQLite's json_type and PostgreSQL's jsonb_typeof name them
JSON_TYPES = {
    "number": ("integer", "real"),
    "bool": ("true", "false"),
    "string": ("text",),
    "date": ("text",),
}
JSONB_TYPES = {"number": "number", "bool": "boolean", "string": "string", "date": "string"}
JSONB_CASTS = {"number": "::float8", "bool": "::boolean", "string": "", "date": ""}


def attribute_select(attributes: Mapping[str, str], *, postgresql: bool = False) -> str:
    """The select list of the customer row: each attribute out of the JSON, then how many of
    them hold a value of another JSON type than their field's (the batch is then read row by
    row, which names the value); a lone NULL when there is no attribute.

    >>> attribute_select({"age": "number"}).split(", (")[0]
    "json_extract(c.attributes, '$.age') AS a0"
    >>> attribute_select({"age": "number"}).endswith("NOT IN ('null', 'integer', 'real'))) AS bad")
    True
    >>> attribute_select({"vip": "bool"}, postgresql=True).split(", (")[0]
    "CASE WHEN jsonb_typeof(c.attributes->'vip') = 'boolean' THEN (c.attributes->>'vip')::boolean END AS a0"
    """  # noqa: E501
    if not attributes:
        return "NULL"
    if postgresql:
        parts = [
            f"CASE WHEN jsonb_typeof(c.attributes->'{n}') = '{JSONB_TYPES[t]}' "
            f"THEN (c.attributes->>'{n}'){JSONB_CASTS[t]} END AS a{i}"
            for i, (n, t) in enumerate(attributes.items())
        ]
        checks = [
            f"(CASE WHEN jsonb_typeof(c.attributes->'{n}') NOT IN ('null', '{JSONB_TYPES[t]}') "
            "THEN 1 ELSE 0 END)"
            for n, t in attributes.items()
        ]
    else:
        parts = [f"json_extract(c.attributes, '$.{n}') AS a{i}" for i, n in enumerate(attributes)]
        checks = [
            f"(IFNULL(json_type(c.attributes, '$.{n}'), 'null') NOT IN "
            f"({', '.join(repr(t) for t in ('null', *JSON_TYPES[dtype]))}))"
            for n, dtype in attributes.items()
        ]
    return ", ".join([*parts, f"({' + '.join(checks)}) AS bad"])


def _address(engine: sa.Engine) -> str | None:
    """The database as the batch reader opens it, or None where it cannot (an in-memory
    SQLite, another backend). Only the URL reaches it: the engine's ``connect_args`` do not
    (`make_engine` sets none that change what a query reads on PostgreSQL).

    PostgreSQL's is a libpq connection string built from the URL's parts, not the URL as
    SQLAlchemy renders it: that writes a space in a query value as ``+``, which libpq does not
    read as a space (``options=-c search_path=...`` would fail).
    """
    url = engine.url
    if engine.dialect.name == "postgresql":
        from psycopg.conninfo import make_conninfo  # noqa: PLC0415 (PostgreSQL only)

        parts: dict[str, Any] = {
            "host": url.host,
            "port": url.port,
            "dbname": url.database,
            "user": url.username,
            "password": url.password,
        }
        for key, value in url.query.items():
            parts[key] = value if isinstance(value, str) else value[-1]
        return "postgresql:" + make_conninfo(**{k: v for k, v in parts.items() if v is not None})
    if engine.dialect.name == "sqlite":
        path = url.database
        if not path or path == ":memory:" or path.startswith("file:"):
            return None
        return "sqlite:" + os.path.abspath(path)
    return None


def _start(url: str) -> subprocess.Popen[bytes]:
    """The batch reader of ``url``. It gets the address in its environment, not on its
    command line, where other users of the machine could read a password."""
    root = str(Path(__file__).resolve().parents[2])  # this checkout, installed or not
    paths = [root, os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), URL_VARIABLE: url}
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.storage.batch_server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
