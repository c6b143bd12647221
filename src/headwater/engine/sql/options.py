"""The ``WITH (...)`` options of a pipeline.

=================  ===========================  =============================================
option             default                      meaning
=================  ===========================  =============================================
watermark_delay    '0 seconds'                  watermark = max event time seen - delay
allowed_lateness   '0 seconds'                  how long after its end a window still takes rows
emit               'final'                      'final': a window once, when it closes;
                                                'changes': changed groups after every batch
start              'earliest'                   where a new pipeline starts reading the stream
idle_timeout       none                         after this much processing time without rows,
                                                the watermark follows processing time
=================  ===========================  =============================================

>>> parse_options([("emit", "changes", 0), ("watermark_delay", "5 seconds", 0)], "")
Options(watermark_delay_ms=5000, allowed_lateness_ms=0, emit='changes', start='earliest', idle_timeout_ms=None)
"""

from __future__ import annotations

from headwater.engine.plan import EmitMode, Options, StartFrom
from headwater.engine.sql.text import syntax_error, unsupported
from headwater.model.time import parse_duration_ms

DURATIONS = ("watermark_delay", "allowed_lateness", "idle_timeout")


def parse_options(items: list[tuple[str, str, int]], sql: str) -> Options:
    durations: dict[str, int] = {}
    emit: EmitMode = "final"
    start: StartFrom = "earliest"
    seen: set[str] = set()
    for key, value, offset in items:
        if key in seen:
            raise syntax_error(sql, offset, f"option {key!r} is given twice")
        seen.add(key)
        if key in DURATIONS:
            try:
                durations[key] = parse_duration_ms(value)
            except ValueError as exc:
                raise syntax_error(sql, offset, f"{key}: {exc}") from exc
            if durations[key] < 0 or (key == "idle_timeout" and durations[key] == 0):
                raise syntax_error(sql, offset, f"{key} must be positive")
        elif key == "emit":
            if value.lower() not in ("final", "changes"):
                raise syntax_error(sql, offset, "emit is 'final' or 'changes'")
            emit = "final" if value.lower() == "final" else "changes"
        elif key == "start":
            if value.lower() not in ("earliest", "latest"):
                raise syntax_error(sql, offset, "start is 'earliest' or 'latest'")
            start = "earliest" if value.lower() == "earliest" else "latest"
        else:
            known = ", ".join([*DURATIONS, "emit", "start"])
            raise unsupported(f"option {key!r}", sql, offset, f"known options are {known}")
    return Options(
        watermark_delay_ms=durations.get("watermark_delay", 0),
        allowed_lateness_ms=durations.get("allowed_lateness", 0),
        emit=emit,
        start=start,
        idle_timeout_ms=durations.get("idle_timeout"),
    )
