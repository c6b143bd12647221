"""Decode + validate throughput of ``decode_and_validate``, one core, per body format.

Builds 1,000-event bodies of ~200-byte IoT readings and times decode + validation
in process CPU time (best of several rounds, so neighbours on a shared machine
count as little as possible), printing events/s and MB/s per scenario and the
ratio to ``pyarrow.json`` reading the same NDJSON with the same schema and
nothing else (no timestamp conversion, no validation), measured in the same run.

    python benchmarks/decode.py                    # default scenarios
    python benchmarks/decode.py --events 10000 --seconds 2

Not part of the test run.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import fastavro
import pyarrow as pa
import pyarrow.json as pajson

from headwater.ingest.batch import DecodeLimits, decode_and_validate
from headwater.model.schema import StreamSchema, schema_from_dict
from headwater.model.time import parse_iso_ms

NOW = parse_iso_ms("2026-11-21T12:00:00Z")
LIMITS = DecodeLimits(64 << 20, 100_000, 32, 0, 86_400_000, 1000)
FIELDS = [
    {"name": "device_id", "type": "string", "required": True, "max_length": 32},
    {"name": "ts", "type": "timestamp", "required": True},
    {"name": "temperature", "type": "float", "min": -50, "max": 150},
    {"name": "humidity", "type": "float", "min": 0, "max": 100},
    {"name": "status", "type": "string", "enum": ["ok", "warn", "error"]},
    {"name": "event_id", "type": "string"},
    {"name": "site", "type": "string"},
    {"name": "battery", "type": "float", "min": 0, "max": 1},
    {"name": "seq", "type": "int", "min": 0},
]
SCHEMA = schema_from_dict(
    {
        "name": "readings",
        "fields": FIELDS,
        "event_time": "ts",
        "key": ["device_id"],
        "id": "event_id",
    }
)
WITH_RULE = schema_from_dict(
    {
        "name": "readings",
        "fields": FIELDS,
        "event_time": "ts",
        "rules": [{"expr": "status <> 'error' OR temperature > 60"}],
    }
)


def events(n: int, seed: int = 7) -> list[dict[str, object]]:
    rng = random.Random(seed)
    start = datetime(2026, 11, 21, 11, 0, tzinfo=UTC)
    return [
        {
            "device_id": f"dev-{rng.randrange(10_000):05d}",
            "ts": (start + timedelta(milliseconds=37 * i))
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "temperature": round(rng.uniform(-10, 40), 2),
            "humidity": round(rng.uniform(0, 100), 1),
            "status": rng.choice(["ok", "ok", "ok", "warn"]),
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "site": f"plant-{rng.randrange(20)}",
            "battery": round(rng.random(), 3),
            "seq": i,
        }
        for i in range(n)
    ]


def ndjson(rows: list[dict[str, object]]) -> bytes:
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in rows)


def json_array(rows: list[dict[str, object]]) -> bytes:
    return json.dumps(rows, separators=(",", ":")).encode()


def csv_body(rows: list[dict[str, object]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[f["name"] for f in FIELDS])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def avro_body(rows: list[dict[str, object]]) -> bytes:
    schema = {
        "type": "record",
        "name": "Reading",
        "fields": [
            {
                "name": f["name"],
                "type": {"float": "double", "int": "long"}.get(str(f["type"]), "string"),
            }
            for f in FIELDS
        ],
    }
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(schema), rows)
    return out.getvalue()


def with_bad_rows(rows: list[dict[str, object]], every: int) -> list[dict[str, object]]:
    """Every ``every``-th row gets a value of the wrong type (a string seq)."""
    return [r | {"seq": "oops"} if i % every == every // 2 else r for i, r in enumerate(rows)]


@dataclass(frozen=True)
class Scenario:
    name: str
    body: bytes
    content_type: str
    encoding: str | None = None
    schema: StreamSchema = SCHEMA
    expect_errors: int = 0


def scenarios(n: int) -> list[Scenario]:
    rows = events(n)
    nd = ndjson(rows)
    bad = ndjson(with_bad_rows(rows, 100))
    nd_ct, json_ct = "application/x-ndjson", "application/json"
    return [
        Scenario("NDJSON, valid", nd, nd_ct),
        Scenario("NDJSON, valid, with a cross-field rule", nd, nd_ct, schema=WITH_RULE),
        Scenario("NDJSON, gzip", gzip.compress(nd, 6), nd_ct, "gzip"),
        Scenario("NDJSON, 1% bad rows (slow path)", bad, nd_ct, expect_errors=n // 100),
        Scenario("JSON array, valid", json_array(rows), json_ct),
        Scenario(
            "JSON array, 1% bad rows",
            json_array(with_bad_rows(rows, 100)),
            json_ct,
            expect_errors=n // 100,
        ),
        Scenario("CSV, valid", csv_body(rows), "text/csv"),
        Scenario("Avro OCF, valid", avro_body(rows), "avro/binary"),
    ]


def best_rate(run: Callable[[], object], seconds: float) -> float:
    """Best CPU seconds per call over rounds of ~``seconds / 8``."""
    run()
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        calls, started = 0, time.process_time()
        while time.process_time() - started < seconds / 8:
            run()
            calls += 1
        best = min(best, (time.process_time() - started) / calls)
    return best


def reference(n: int) -> Callable[[], object]:
    """pyarrow.json reading the NDJSON body with the stream's types: parsing only."""
    body = ndjson(events(n))
    arrow = {
        "string": pa.string(),
        "timestamp": pa.string(),
        "float": pa.float64(),
        "int": pa.int64(),
    }
    options = pajson.ParseOptions(
        explicit_schema=pa.schema([(f["name"], arrow[str(f["type"])]) for f in FIELDS]),
        unexpected_field_behavior="ignore",
    )
    read = pajson.ReadOptions(use_threads=False)
    return lambda: pajson.read_json(pa.BufferReader(body), read_options=read, parse_options=options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000, help="events per body")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing budget per scenario")
    args = parser.parse_args()
    n = args.events
    base = best_rate(reference(n), args.seconds)
    print(f"{n} events per body; decode + validate on one core (CPU time, best round)\n")
    header = f"{'scenario':40} {'KB':>5} {'events/s':>11} {'MB/s':>6} {'µs/body':>8} {'vs pyarrow.json':>16}"
    print(header)
    print("-" * len(header))
    for sc in scenarios(n):
        batch = decode_and_validate(sc.body, sc.content_type, sc.encoding, sc.schema, LIMITS, NOW)
        assert len(batch.errors) == sc.expect_errors, (sc.name, batch.errors[:3])

        def run(sc: Scenario = sc) -> object:
            return decode_and_validate(
                sc.body, sc.content_type, sc.encoding, sc.schema, LIMITS, NOW
            )

        per_body = best_rate(run, args.seconds)
        print(
            f"{sc.name:40} {len(sc.body) / 1024:5.0f} {n / per_body:11,.0f} "
            f"{len(sc.body) / per_body / 1e6:6.0f} {per_body * 1e6:8.0f} {base / per_body:15.2f}x"
        )
    size = len(ndjson(events(n)))
    print(
        f"{'reference: pyarrow.json, parse only':40} {size / 1024:5.0f} {n / base:11,.0f} "
        f"{size / base / 1e6:6.0f} {base * 1e6:8.0f} {1:15.2f}x"
    )


if __name__ == "__main__":
    main()
