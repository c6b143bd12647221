"""The pull-source kinds this build runs: kind name → how to open a source of that kind."""

from __future__ import annotations

from pathlib import Path

from headwater.connectors.sources.files import DirectorySource
from headwater.connectors.sources.mqtt import MqttSource
from headwater.connectors.sources.runtime import Kinds


def pull_kinds(file_root: Path) -> Kinds:
    return {"mqtt": MqttSource, "file": lambda rec: DirectorySource(rec, file_root)}
