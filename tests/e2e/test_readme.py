"""The README's tour runs as written, in a fresh directory beside the README's ``.venv``.

Its shell blocks run as one bash script, with one change: port 8000 becomes a free port
(``HEADWATER_URL`` tells the command-line tools the same). ``headwater`` is not on PATH
beforehand, as after the README's install command.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from serverproc import free_port

README = Path(__file__).resolve().parents[2] / "README.md"


def tour_script() -> str:
    text = README.read_text()
    tour = text[text.index("## A short tour") : text.index("## Performance")]
    return "\n".join(re.findall(r"```bash\n(.*?)```", tour, re.S))


def test_the_tour_runs_as_written(tmp_path: Path) -> None:
    venv = Path(sys.prefix)
    if not (venv / "bin" / "activate").exists():
        pytest.fail(f"the tests run outside a virtual environment ({venv}); use .venv/bin/python")
    (tmp_path / ".venv").symlink_to(venv)
    port = free_port()
    script = tour_script().replace("8000", str(port))
    bin_dir = str(venv / "bin")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != bin_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEADWATER_", "VIRTUAL_ENV"))}
    env.update(PATH=path, HEADWATER_URL=f"http://127.0.0.1:{port}", HEADWATER_LOG_LEVEL="warning")
    proc = subprocess.Popen(
        ["bash", "-c", script], cwd=tmp_path, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=180)
    finally:
        # the tour stops its server itself; this only cleans up after a failure
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert "command not found" not in out, out
    assert '"accepted":1,"rejected":1' in out, out  # the NDJSON body
    assert '"code":"above_max"' in out, out  # its rejected row, and the quarantine
    assert '"name":"device_minute"' in out, out  # the pipeline was made
    assert re.search(r"data\.ndjson → stream readings\s+accepted\s+1\b", out), out
    assert re.search(r"count_star\(\)[^│]*│ 2 ", out), out  # headwater sql: 1 + 1 rows
    assert re.search(r"│ device_minute │ running ", out), out  # headwater status
    assert "# TYPE " in out, out  # /metrics
    assert "Traceback" not in out and "error:" not in out.lower(), out
