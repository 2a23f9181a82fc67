"""Consumers of tcx-bridge events: the shared runtime and one module per consumer."""
