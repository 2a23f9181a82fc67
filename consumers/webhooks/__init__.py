"""``tcx-bridge consume webhooks``: signed webhooks to any HTTP endpoint (docs/webhooks.md)."""
