"""The Nubis latency benchmark suite."""
