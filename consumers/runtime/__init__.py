"""The runtime every consumer shares: the interface (consumer), the consume loop (runner), what becomes
of a failed message (failures), plugins (entry points), metrics.

A plugin needs only ``from consumers.runtime import Binding, Consumer, Context``.
"""

from bridge.topology import Binding
from consumers.runtime.consumer import Consumer, Context
from consumers.runtime.runner import Runner

__all__ = ["Binding", "Consumer", "Context", "Runner"]
