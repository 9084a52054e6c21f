"""spargo: topology package."""
