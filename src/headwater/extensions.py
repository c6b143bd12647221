"""Built-in extensions of the HTTP app, by profile (serve, demo).

Built-in features plug in through the same hook a third-party extension would use:
``install(app, runtime)``, which mounts routes over the runtime's services and starts
nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from headwater.runtime import Runtime

Extension = Callable[[FastAPI, Runtime], None]


def extensions(profile: str) -> list[Extension]:
    from headwater.ui import mount as ui

    out: list[Extension] = [ui.install]
    if profile == "demo":
        from headwater import demo

        out.append(demo.install)
    return out
