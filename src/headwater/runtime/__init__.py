"""The runtime: ``build_runtime(settings)`` wires every component; ``Runtime`` runs them."""

from headwater.runtime.build import build_runtime
from headwater.runtime.core import Runtime
from headwater.runtime.opening import DEFAULT_TENANT

__all__ = ["DEFAULT_TENANT", "Runtime", "build_runtime"]
