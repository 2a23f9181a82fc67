"""The commands the consumers add to ``tcx-bridge``.

Registered in the entry-point group ``tcx_bridge.commands`` (pyproject.toml).
"""
