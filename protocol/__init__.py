"""spargo: protocol package."""
