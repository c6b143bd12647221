"""Sinks: deliver a stream's rows or a pipeline's results to an outside system.

The core (this package) knows nothing of the web framework: ``SinkManager`` is driven
by the HTTP routes in ``headwater.api.routes.sinks`` and could be driven by a worker.
"""
