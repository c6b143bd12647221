"""How many examples property tests try, by Hypothesis profile (``HYPOTHESIS_PROFILE``).

- ``dev`` (running pytest by hand): a quarter of the sizes below, for quick feedback.
- ``ci`` (``scripts/test.sh``, so ``.ci/run``): the sizes as written, which keep the whole
  suite within its time budget on a busy 2-core machine.
- ``thorough``: ten times as many, to hunt for rare failures.

Tests write ``@settings(max_examples=examples(40))`` with the CI size.
"""

from __future__ import annotations

import os

PROFILES = {"dev": 0.25, "ci": 1.0, "thorough": 10.0}


def profile() -> str:
    name = os.environ.get("HYPOTHESIS_PROFILE", "dev")
    if name not in PROFILES:
        raise ValueError(f"HYPOTHESIS_PROFILE={name!r}: use one of {', '.join(PROFILES)}")
    return name


def examples(n: int, name: str | None = None) -> int:
    """``n`` (the CI size) scaled for the profile in use (or ``name``)."""
    return max(3, round(n * PROFILES[name or profile()]))
