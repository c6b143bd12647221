"""The source runtime and the ingest entry stay free of the web framework (they must be
able to run in a worker process without the HTTP API)."""

import subprocess
import sys

CORE = [
    "headwater.ingest.accept",
    "headwater.connectors.sources.runtime",
    "headwater.connectors.sources.positions",
    "headwater.connectors.sources.mqtt",
    "headwater.connectors.sources.nats",
    "headwater.connectors.sources.jetstream",
    "headwater.connectors.sources.files",
    "headwater.connectors.sources.uploads",
]


def test_the_source_core_imports_no_web_framework() -> None:
    code = (
        f"import sys\nfor m in {CORE!r}: __import__(m)\n"
        "print(','.join(m for m in ('fastapi', 'starlette', 'uvicorn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
