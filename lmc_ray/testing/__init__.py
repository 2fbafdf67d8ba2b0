"""Helpers for tests and benchmarks, not used by a sweep: tiny model populations built from a config (population)
and the memory of a process tree (memory)."""
