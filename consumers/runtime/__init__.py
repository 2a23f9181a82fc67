"""The runtime every consumer shares: the consume loop (runner), plugins (entry points), metrics.

A plugin needs only ``from consumers.runtime import Binding, Consumer, Context``.
"""

from bridge.topology import Binding
from consumers.runtime.runner import Consumer, Context, Runner

__all__ = ["Binding", "Consumer", "Context", "Runner"]
