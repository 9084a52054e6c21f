"""spargo: sims package."""
