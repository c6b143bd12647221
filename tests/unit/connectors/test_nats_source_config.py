"""The NATS source's config and the rule that keeps or re-creates its durable consumer."""

from __future__ import annotations

import datetime as dt

import pytest
from nats.js.api import ConsumerConfig, ConsumerInfo, SequenceInfo

from headwater.connectors.sources.jetstream import keeps
from headwater.connectors.sources.nats import NatsConfig
from headwater.errors import BadRequest

BASE = {"url": "nats://127.0.0.1:4222", "subjects": ["a.>"]}


def info(floor: int, pending: int, subjects: list[str] | None = None) -> ConsumerInfo:
    subjects = subjects or ["a.>"]
    return ConsumerInfo(
        name="d", stream_name="S", created=dt.datetime.now(dt.UTC),
        config=ConsumerConfig(filter_subject=subjects[0] if len(subjects) == 1 else None,
                              filter_subjects=subjects if len(subjects) > 1 else None),
        ack_floor=SequenceInfo(consumer_seq=floor, stream_seq=floor), num_ack_pending=pending,
    )  # fmt: skip


def test_the_consumer_is_kept_only_when_it_starts_after_the_committed_sequence() -> None:
    cfg = NatsConfig.parse(BASE)
    assert keeps(info(42, 0), 42, cfg)
    assert not keeps(info(40, 0), 42, cfg)  # acks lost in a crash: start after 42
    assert not keeps(info(42, 5), 42, cfg)  # delivered, not committed: deliver again now
    assert not keeps(info(50, 0), 42, cfg)  # the log is the truth
    assert not keeps(info(42, 0, ["b.>"]), 42, cfg)  # other subjects
    assert keeps(info(0, 0), None, cfg)
    assert not keeps(info(0, 3), None, cfg)
    assert keeps(info(0, 3), None, NatsConfig.parse({**BASE, "start": "latest"}))


def test_config_defaults_and_refusals() -> None:
    cfg = NatsConfig.parse({**BASE, "subject_fields": "a.{device}.t"})
    assert (cfg.mode, cfg.start, cfg.batch_max, cfg.fields) == ("jetstream", "earliest", 5000,
                                                                ((1, "device"),))  # fmt: skip
    assert NatsConfig.parse({"url": ["nats://h:1", "tls://h:2"], "subject": "x"}).servers == (
        "nats://h:1", "tls://h:2",
    )  # fmt: skip
    for bad in ({"url": "h:1", "subjects": ["a"]}, {**BASE, "ack_wait_s": 0},
                {**BASE, "mode": "core", "durable": "d"}, {**BASE, "queue": "q"}):  # fmt: skip
        with pytest.raises(BadRequest):
            NatsConfig.parse(bad)
