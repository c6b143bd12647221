"""Event-id hashes on disk: sorted runs of ``uint64``, merged as they pile up.

A stream's directory holds ``run-<n>.u64`` files (sorted, little-endian ``uint64``) and
``manifest.json``: the runs in use and ``covered``, the log offset below which every
entry's ids are in them. A run is written and fsynced before the manifest names it, and
the manifest is replaced atomically, so a crash leaves either the old set of runs or the
new one; files no manifest names are removed on open. Lookups binary-search the runs
through memory maps: nothing is loaded at start, whatever the history.

Runs merge size-tiered (a new run merges with the one before while it is at least half
its size), so a stream has about log2(ids / run size) runs. A merge streams both inputs
chunk by chunk: its memory is bounded by the chunk, not by the runs.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np

from headwater.log.segment import fsync_dir

MANIFEST = "manifest.json"
MERGE_CHUNK = 1 << 20  # ids per merge step


class IdRuns:
    """The on-disk runs of one stream. Readers may run beside one writer thread."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        manifest = directory / MANIFEST
        state = json.loads(manifest.read_text()) if manifest.exists() else {}
        self.covered: int = int(state.get("covered", 0))
        self._next: int = int(state.get("next", 0))
        names: list[str] = state.get("runs", [])
        self._runs: list[tuple[str, np.ndarray]] = [(n, _open(directory / n)) for n in names]
        for stray in directory.glob("run-*.u64"):  # written, never named: a crash mid-add
            if stray.name not in names:
                stray.unlink()

    @property
    def exists(self) -> bool:
        return (self.dir / MANIFEST).exists()

    def __len__(self) -> int:
        return sum(int(r.size) for _, r in self._runs)

    def run_count(self) -> int:
        return len(self._runs)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """Exact membership of ``hashes`` in the runs."""
        found = np.zeros(hashes.size, dtype=bool)
        if hashes.size == 0:
            return found
        order = np.argsort(hashes)
        ordered = hashes[order]
        hit = np.zeros(hashes.size, dtype=bool)
        for _, run in self._runs:  # a snapshot: the writer replaces the list, never edits it
            if run.size:
                pos = np.searchsorted(run, ordered)
                pos[pos >= run.size] = 0
                hit |= run[pos] == ordered
        found[order] = hit
        return found

    def iter_all(self) -> list[np.ndarray]:
        return [run for _, run in self._runs]

    def add(self, hashes: np.ndarray, covered: int) -> None:
        """Add sorted, unique ``hashes`` as a run; ``covered`` moves to the given offset."""
        with self._lock:
            runs = list(self._runs)
            if hashes.size:
                runs.append(self._write(hashes))
            while len(runs) > 1 and runs[-1][1].size * 2 >= runs[-2][1].size:
                merged = self._merge(runs[-2][1], runs[-1][1])
                runs[-2:] = [merged]
            self._save(runs, covered)
            gone = {n for n, _ in self._runs} - {n for n, _ in runs}
            self._runs, self.covered = runs, covered
        for name in gone:  # readers still holding the old list keep their memory maps
            (self.dir / name).unlink(missing_ok=True)

    def _write(self, hashes: np.ndarray) -> tuple[str, np.ndarray]:
        name = self._name()
        with open(self.dir / name, "wb") as fh:
            fh.write(np.ascontiguousarray(hashes, dtype="<u8").tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        return name, _open(self.dir / name)

    def _merge(self, a: np.ndarray, b: np.ndarray) -> tuple[str, np.ndarray]:
        name = self._name()
        with open(self.dir / name, "wb") as fh:
            i = j = 0
            while i < a.size or j < b.size:
                part_a = a[i : i + MERGE_CHUNK]
                if i + part_a.size < a.size:
                    stop = int(np.searchsorted(b, part_a[-1], side="right"))
                else:
                    stop = b.size
                chunk = np.concatenate([part_a, b[j:stop]])
                chunk.sort(kind="stable")  # two sorted runs: a linear merge
                fh.write(chunk.astype("<u8", copy=False).tobytes())
                i, j = i + part_a.size, stop
            fh.flush()
            os.fsync(fh.fileno())
        return name, _open(self.dir / name)

    def _name(self) -> str:
        self._next += 1
        return f"run-{self._next:08d}.u64"

    def _save(self, runs: list[tuple[str, np.ndarray]], covered: int) -> None:
        tmp = self.dir / (MANIFEST + ".tmp")
        state = {"covered": covered, "next": self._next, "runs": [n for n, _ in runs]}
        with open(tmp, "w") as fh:
            fh.write(json.dumps(state))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / MANIFEST)
        fsync_dir(self.dir)


def _open(path: Path) -> np.ndarray:
    if path.stat().st_size == 0:
        return np.empty(0, np.uint64)
    return np.memmap(path, "<u8", "r")
