import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

from examples import PROFILES, examples, profile

for name in PROFILES:
    extra = {"database": None} if name == "ci" else {}
    settings.register_profile(
        name, max_examples=examples(100, name), deadline=None, print_blob=True, **extra
    )
settings.load_profile(profile())


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Kafka-compatible broker (Tansu) on a free port for the whole session."""
    from kafka_broker import Tansu

    broker = Tansu(tmp_path_factory.mktemp("kafka")).start()
    yield broker
    broker.stop()
