"""tcx-bridge: 3CX Assistant call events to RabbitMQ.

Kept empty on purpose: the notify executable imports this package once per call
event, so nothing heavy may be imported here.
"""

__version__ = "0.1.0"
