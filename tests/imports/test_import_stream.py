"""The event import reads its file in chunks: lines, rejects, duplicates and clashes across them.

Chunks are made four rows long (``bulk.CHUNK_ROWS``) so that a few lines span several.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from orchestrator.errors import ImportFileError
from orchestrator.imports import import_events
from orchestrator.imports.stream import PacedFile, open_source
from orchestrator.storage import bulk

HEADER = "event_id,customer_id,occurred_at,type,amount,note\n"


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch) -> None:
    monkeypatch.setattr(bulk, "CHUNK_ROWS", 4)


def _row(i: int, amount: object = None, note: str = "") -> str:
    value = i if amount is None else amount
    return f"e{i},c{i % 3},2024-01-{1 + i % 28:02d},purchase,{value},{note}\n"


def test_chunks_cover_the_file_in_order_with_their_lines(files) -> None:
    """Quoted newlines and a blank line shift the lines; each chunk knows its own."""
    body = "".join(_row(i) for i in range(5))
    body += _row(5, note='"two\nlines"') + "\n" + "".join(_row(i) for i in range(6, 11))
    stream = open_source(files.text("e.csv", HEADER + body))
    chunks = list(stream.chunks(4))
    assert [c.first_row for c in chunks] == [0, 4, 8]
    assert [c.table.num_rows for c in chunks] == [4, 4, 3]
    lines = [int(x) for c in chunks for x in c.lines()]
    # row 5 starts on line 7 and takes two; a blank line 9; row 6 is on line 10
    assert lines == [2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14]
    assert stream.columns == ["event_id", "customer_id", "occurred_at", "type", "amount", "note"]


def test_bad_rows_in_later_chunks_are_named_by_line_and_rejected(engine, files, stored) -> None:
    body = "".join(_row(i) for i in range(6))
    body += _row(6, amount="lots")  # line 9, second chunk
    body += "e7,c1,2024-01-02,purchase\n"  # line 10: a field short
    body += "".join(_row(i) for i in range(8, 13))
    body += _row(13, note='"a\nb"') + _row(14, amount="x")  # line 17, after a two-line record
    path = files.text("e.csv", HEADER + body)
    with pytest.raises(ImportFileError, match=r"^.*e\.csv line 8, field 'amount': 'lots' is"):
        import_events(engine, path)
    assert stored.events() == []

    report = import_events(engine, path, skip_invalid=True)
    assert (report.rows_read, report.inserted, report.rejected) == (15, 12, 3)
    with open(report.rejects_path or "", newline="", encoding="utf-8") as f:
        rejects = list(csv.DictReader(f))
    assert [(r["line"], r["event_id"]) for r in rejects] == [
        ("8", "e6"),
        ("9", "e7"),
        ("17", "e14"),
    ]
    assert rejects[1]["reason"] == "expected 6 fields, got 4"


def test_a_malformed_last_row_is_found(engine, files) -> None:
    body = "".join(_row(i) for i in range(5)) + "e9,c1\n"
    with pytest.raises(ImportFileError, match=r"e\.csv line 7: expected 6 fields, got 2"):
        import_events(engine, files.text("e.csv", HEADER + body))


def test_repeats_and_clashes_across_chunks(engine, files, stored) -> None:
    body = "".join(_row(i) for i in range(9)) + _row(1) + _row(2)  # the same events again
    report = import_events(engine, files.text("a.csv", HEADER + body))
    assert (report.rows_read, report.inserted, report.unchanged_or_duplicate) == (11, 9, 2)

    clash = "".join(_row(i) for i in range(20, 29)) + _row(21, amount=999)  # line 11
    before = stored.events()
    with pytest.raises(ImportFileError) as exc:
        import_events(engine, files.text("b.csv", HEADER + clash))
    assert str(exc.value) == (
        f"{files.root / 'b.csv'} line 3 and line 11: event_id 'e21' is given to two different "
        "events; give each event its own id"
    )
    assert stored.events() == before

    corrected = "".join(_row(i) for i in range(5)) + _row(7, amount=70)
    with pytest.raises(ImportFileError, match=r"b2\.csv line 7: event_id 'e7' is stored already"):
        import_events(engine, files.text("b2.csv", HEADER + corrected))
    fixed = import_events(engine, files.text("b2.csv", HEADER + corrected), update=True)
    assert (fixed.inserted, fixed.updated, fixed.unchanged_or_duplicate) == (0, 1, 5)


def test_json_lines_blocks_may_differ_in_types_and_columns(engine, files, stored) -> None:
    rows = [
        {"customer_id": f"c{i}", "occurred_at": "2024-01-02", "type": "buy", "amount": i}
        for i in range(4)
    ]
    rows += [
        {"customer_id": "c4", "occurred_at": "2024-01-03", "type": "buy", "amount": "2.5"},
        {"customer_id": "c5", "occurred_at": "2024-01-03T10:00:00+01:00", "type": "buy"},
        {"customer_id": "c6", "occurred_at": "2024-01-04", "type": "buy", "amount": 1, "page": 3},
    ]
    text = "\n".join(json.dumps(r) for r in rows) + "\n\n" + '{"customer_id": 5\n'
    report = import_events(engine, files.text("e.jsonl", text), skip_invalid=True)
    assert (report.rows_read, report.inserted, report.rejected) == (8, 7, 1)
    got = {r["customer_id"]: (r["amount"], r["extra"]) for r in stored.events()}
    assert got["c4"] == (2.5, None) and got["c5"] == (0.0, None) and got["c6"] == (1.0, {"page": 3})
    with open(report.rejects_path or "", newline="", encoding="utf-8") as f:
        (reject,) = list(csv.DictReader(f))
    assert reject["line"] == "9" and reject["reason"].startswith("not valid JSON")


def test_parquet_is_read_in_batches(engine, files, stored) -> None:
    n = 10
    table = pa.table(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "occurred_at": ["2024-01-01"] * (n - 1) + ["soon"],
            "type": ["buy"] * n,
            "amount": [float(i) for i in range(n)],
        }
    )
    path = files.parquet("e.parquet", table)
    assert [c.table.num_rows for c in open_source(path).chunks(4)] == [4, 4, 2]
    with pytest.raises(ImportFileError, match=r"e\.parquet row 10, field 'occurred_at'"):
        import_events(engine, path)


def _paced_reader(
    data: bytes, block: int, ahead: int
) -> tuple[PacedFile, pa_csv.CSVStreamingReader]:
    paced = PacedFile(io.BytesIO(data), block, ahead)  # type: ignore[arg-type]
    reader = pa_csv.open_csv(paced, read_options=pa_csv.ReadOptions(block_size=block))
    paced.reader = reader
    return paced, reader


def _wait_for(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_csv_reader_is_held_a_few_blocks_ahead_of_the_batches_taken() -> None:
    block = 1 << 12
    data = ("a,b\n" + "".join(f"{i},{'x' * 20}\n" for i in range(20_000))).encode()
    assert len(data) > 100 * block
    paced, reader = _paced_reader(data, block, 2)
    reader.read_next_batch()
    paced.took_block()
    # The reader's I/O thread runs ahead until the file holds it back: with no pacing it would
    # never wait and this would time out.
    assert _wait_for(lambda: paced.waiting), f"never held back; read {paced.given} bytes"
    assert paced.given <= 3 * block
    paced.took_block()  # one more batch taken: one more block may be read, no more
    assert _wait_for(lambda: paced.given > 3 * block and paced.waiting)
    assert paced.given <= 4 * block
    paced.stop()


def test_unpaced_the_reader_runs_far_ahead() -> None:
    """What the pacing is for: Arrow's streaming reader, left alone, reads about 32 blocks ahead
    of the batches asked for (512 MiB at the import's 16 MiB blocks)."""
    block = 1 << 12
    data = ("a,b\n" + "".join(f"{i},{'x' * 20}\n" for i in range(20_000))).encode()
    paced, reader = _paced_reader(data, block, 1_000_000)
    reader.read_next_batch()
    assert _wait_for(lambda: paced.given > 20 * block), f"read only {paced.given} bytes"
    paced.stop()


def test_a_paced_file_read_to_the_end_gives_every_row() -> None:
    block = 1 << 12
    data = ("a,b\n" + "".join(f"{i},v{i}\n" for i in range(5_000))).encode()
    paced, reader = _paced_reader(data, block, 2)
    values: list[int] = []
    for batch in reader:
        paced.took_block()
        values += batch.column(0).to_pylist()
    paced.stop()
    assert values == list(range(5_000))


def test_leaving_a_big_file_after_its_first_chunk_exits_cleanly(tmp_path) -> None:
    """An abandoned stream must not leave Arrow's I/O thread inside Python: at exit that aborts
    the interpreter ("PyGILState_Release ... finalizing")."""
    path = tmp_path / "big.csv"
    with open(path, "w") as f:
        f.write(HEADER)
        f.writelines(_row(i) for i in range(400_000))
    code = (
        "import sys\n"
        "from orchestrator.imports.stream import open_source\n"
        "stream = open_source(sys.argv[1])\n"
        "print(stream.first().table.num_rows)\n"
        "print(next(iter(stream.chunks(1000))).table.num_rows)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[1] == "1000"
