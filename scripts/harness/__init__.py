"""Benchmark building blocks (test photos, closed-loop HTTP load, GPU sampling), used by scripts/bench_*.py."""
