"""Deterministic simulation of a whole ackly cluster in one thread (DESIGN.md s.1 and s.8).

`ackly sim --seed N --steps M` replays one history; `run_seed` is the library entry point.
"""
