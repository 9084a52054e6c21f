"""spargo: node package."""
