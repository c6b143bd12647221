"""Built-in extensions of the HTTP app, by profile (serve, demo).

Built-in features plug in through the same hook a third-party extension would use:
``install(app, platform)``.
"""

from __future__ import annotations

from headwater.api.app import Extension
from headwater.ui import mount as ui


def extensions(profile: str) -> list[Extension]:
    from headwater.api.routes import alerts, pipelines, sinks, sources

    # sinks read the pipelines' extension (extras["pipelines"]): installed after it
    out: list[Extension] = [
        pipelines.install,
        sources.install,
        sinks.install,
        alerts.install,
        ui.install,
    ]
    if profile == "demo":
        from headwater import demo

        out.append(demo.install)
    return out
