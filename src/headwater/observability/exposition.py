"""What ``/metrics`` shows to whom.

Operators (admins of the default tenant) see every series. Any other caller sees only
the series of its own tenant: those labelled ``tenant="<its tenant>"``, and those
labelled with one of its log topics (``topic="<tenant>.<stream>..."``). Process-wide
series (HTTP, log, store timings) describe every tenant's traffic together, so they
are the operators' too.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample


def exposition(tenant: str | None) -> bytes:
    """The Prometheus text of every series (``tenant`` None) or of one tenant's."""
    if tenant is None:
        return generate_latest(REGISTRY)
    return generate_latest(_TenantView(tenant))


class _TenantView:
    """A collector that yields the registry's families with one tenant's samples only."""

    def __init__(self, tenant: str) -> None:
        self._tenant = tenant

    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            samples = [s for s in family.samples if _belongs(s, self._tenant)]
            if samples:
                own = copy.copy(family)
                own.samples = samples
                yield own


def _belongs(sample: Sample, tenant: str) -> bool:
    labels = sample.labels
    if "tenant" in labels:
        return labels["tenant"] == tenant
    if "topic" in labels:
        return labels["topic"].startswith(f"{tenant}.")
    return False
