"""Callers' numbers: retention per data class, erasure and subject access (docs/privacy.md)."""
