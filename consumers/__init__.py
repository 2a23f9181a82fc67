"""Consumers of tcx-bridge events: the shared runtime and one module per consumer.

Consumers are found through the entry-point group ``tcx_bridge.consumers``
(consumers.runtime.plugins); each is imported only when it runs.
"""
