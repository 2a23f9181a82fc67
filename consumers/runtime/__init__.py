"""The runtime every consumer shares: the consume loop (runner), plugins (entry points), metrics.

A plugin needs only ``from consumers.runtime import Binding, Consumer, Context``.
"""

from consumers.runtime.runner import Binding, Consumer, Context, Runner

__all__ = ["Binding", "Consumer", "Context", "Runner"]
