"""spargo: sparse package."""
