"""A CLI call loads only what its command needs: the store, the log and the data engines
load when a command uses them, not for ``--help``, ``send`` or ``status``."""

import subprocess
import sys

HEAVY = ("duckdb", "pyarrow", "numpy", "fastapi", "headwater.log.file", "headwater.store.duckdb")


def test_the_cli_entry_point_loads_no_engine() -> None:
    code = (
        f"import sys, headwater.cli.main\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
