"""Deterministic simulation of a whole ackly cluster in one thread (docs/architecture.md).

`ackly sim --seed N --steps M` replays one history; `run_seed` is the library entry point.
"""
