"""In-image probe: smoke checks and matmul benchmarks. Needs only the stdlib and torch."""
