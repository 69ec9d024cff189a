"""A faithful Bilibili member + upos simulator for demo, tests and benchmarks."""
