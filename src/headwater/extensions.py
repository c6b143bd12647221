"""Built-in extensions of the HTTP app, by profile (serve, demo)."""

from __future__ import annotations

from headwater.api.app import Extension


def extensions(profile: str) -> list[Extension]:
    return []
