"""The committer writes a runner's commits in order, combining those that wait."""

import threading

import pyarrow as pa
import pytest

from headwater.engine import StepOutput
from headwater.pipelines.committer import Commit, CommitFailed, Committer, combine


def upserts(*pairs: tuple[str, int]) -> StepOutput:
    return StepOutput(upserts=pa.table({"k": [k for k, _ in pairs], "n": [n for _, n in pairs]}))


def appends(*values: int) -> StepOutput:
    return StepOutput(appends=pa.table({"x": list(values)}))


def test_a_flush_after_a_checkpoint_keeps_the_checkpoint_offsets_and_state() -> None:
    first = Commit(upserts(("a", 1)).then(appends(1)), offset=10, state=b"s10")
    later = Commit(upserts(("a", 2), ("b", 1)))
    both = combine(first, later, ["k"])
    assert both.checkpoint and (both.offset, both.state) == (10, b"s10")
    assert both.out.upserts is not None
    assert sorted(both.out.upserts.to_pylist(), key=lambda r: r["k"]) == [
        {"k": "a", "n": 2},
        {"k": "b", "n": 1},
    ]
    assert both.out.appends is not None and both.out.appends["x"].to_pylist() == [1]


def test_a_checkpoint_after_a_checkpoint_takes_the_later_state_and_every_append() -> None:
    first = Commit(appends(1, 2), offset=10, state=b"s10")
    later = Commit(appends(3), offset=20, state=b"s20")
    both = combine(first, later, ["k"])
    assert (both.offset, both.state) == (20, b"s20")
    assert both.out.appends is not None and both.out.appends["x"].to_pylist() == [1, 2, 3]


def test_a_flush_then_a_checkpoint_is_a_checkpoint() -> None:
    both = combine(Commit(upserts(("a", 1))), Commit(appends(1), offset=5, state=b"s"), ["k"])
    assert (both.offset, both.state) == (5, b"s")


def test_commits_are_written_in_order_and_those_that_wait_are_combined() -> None:
    written: list[Commit] = []
    gate = threading.Event()
    entered = threading.Event()

    def write(c: Commit) -> None:
        entered.set()
        gate.wait(5)
        written.append(c)

    committer = Committer("p", ["k"], write)
    try:
        committer.submit(Commit(appends(1), offset=1, state=b"1"))
        assert entered.wait(5)  # the first is being written: the next ones wait together
        committer.submit(Commit(appends(2), offset=2, state=b"2"))
        committer.submit(Commit(upserts(("a", 1))))
        committer.submit(Commit(appends(3), offset=3, state=b"3"))
        gate.set()
        committer.drain()
    finally:
        committer.close()
    assert [c.offset for c in written] == [1, 3]
    assert written[1].out.appends is not None
    assert written[1].out.appends["x"].to_pylist() == [2, 3]
    assert written[1].out.upserts is not None and written[1].out.upserts.num_rows == 1


def test_a_failed_write_is_raised_to_the_runner_and_nothing_after_it_is_written() -> None:
    written: list[Commit] = []

    def write(c: Commit) -> None:
        if c.offset == 1:
            raise ValueError("disk full")
        written.append(c)

    committer = Committer("p", [], write)
    try:
        committer.submit(Commit(appends(1), offset=1, state=b""))
        with pytest.raises(CommitFailed, match="disk full"):
            committer.drain()
        with pytest.raises(CommitFailed):
            committer.submit(Commit(appends(2), offset=2, state=b""))
    finally:
        committer.close()
    assert written == []


def test_close_writes_what_was_submitted() -> None:
    written: list[Commit] = []
    committer = Committer("p", [], written.append)
    committer.submit(Commit(appends(1), offset=1, state=b""))
    committer.close()
    assert [c.offset for c in written] == [1]
