"""Benchmarks: cold start and serving. Run `uv run python -m benchmarks` (see RESULTS.md)."""
