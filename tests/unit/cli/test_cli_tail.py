"""Pieces of ``headwater tail``: the SSE parser, stop conditions, row printing."""

from __future__ import annotations

import io
import time

from rich.console import Console

from headwater.cli.tail import Stop, last_rows_query, rows_query, sse_data
from headwater.cli.tail_print import RowPrinter


def test_sse_events_join_data_lines_and_skip_comments() -> None:
    lines = [": subscribed", "", 'data: {"kind": "rows"}', "", "event: x", "data:a", "data: b", ""]
    assert list(sse_data(lines)) == ['{"kind": "rows"}', "a\nb"]


def test_stop_counts_rows_and_time() -> None:
    s = Stop(max_rows=3)
    assert len(s.take([{"a": 1}, {"a": 2}])) == 2 and not s.done()
    assert s.take([{"a": 3}, {"a": 4}]) == [{"a": 3}] and s.done()
    assert Stop(deadline=time.monotonic() - 1).done()
    assert not Stop().done()


def test_stream_polls_follow_the_log_offset() -> None:
    assert rows_query("readings", 42, 10) == (
        'SELECT * FROM "readings" WHERE _offset >= 42 ORDER BY _offset LIMIT 10'
    )
    assert "_offset < 7" in last_rows_query("readings", 7, 3)


def test_table_printing_keeps_one_header_and_hides_system_columns() -> None:
    buf = io.StringIO()
    p = RowPrinter("table", Console(file=buf, width=200))
    p.show([{"device_id": "d1", "n": 1, "_offset": 0}])
    p.show([{"device_id": "device-long", "n": None, "_offset": 1}])
    text = buf.getvalue()
    assert text.count("device_id") == 1 and "_offset" not in text
    assert "device-long" in text and "NULL" in text
