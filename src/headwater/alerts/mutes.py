"""Snoozes and maintenance silences: which keys of a rule are muted at a given time.

A *snooze* mutes one rule, or one key of it, until an end time. A *silence* mutes every
rule of the tenant whose labels match it (all of its ``labels`` equal; no labels match
every rule) between ``start_ms`` and ``end_ms``. Muting stops notifications only: the
alert's state keeps changing and is recorded (see ``states``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Snooze:
    rule: str
    until_ms: int
    key: str | None = None  # None: the whole rule


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    start_ms: int
    end_ms: int
    labels: dict[str, str] = field(default_factory=dict)
    comment: str = ""

    def matches(self, labels: dict[str, str], now_ms: int) -> bool:
        if not self.start_ms <= now_ms < self.end_ms:
            return False
        return all(labels.get(k) == v for k, v in self.labels.items())


def is_muted(
    rule: str,
    key: str,
    labels: dict[str, str],
    now_ms: int,
    snoozes: list[Snooze],
    silences: list[Silence],
) -> bool:
    """Whether notifications of ``rule`` for ``key`` are muted at ``now_ms``."""
    for s in snoozes:
        if s.rule == rule and (s.key is None or s.key == key) and now_ms < s.until_ms:
            return True
    return any(s.matches(labels, now_ms) for s in silences)


def muted_now(
    rule: str, labels: dict[str, str], now_ms: int, snoozes: list[Snooze], silences: list[Silence]
) -> tuple[bool, set[str]]:
    """``is_muted`` for every key of a rule at once: (the whole rule is muted, muted keys)."""
    live = [s for s in snoozes if s.rule == rule and now_ms < s.until_ms]
    whole = any(s.key is None for s in live) or any(s.matches(labels, now_ms) for s in silences)
    return whole, {s.key for s in live if s.key is not None}
