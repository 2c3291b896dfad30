"""HTTP API and dashboard (issue 5)."""
