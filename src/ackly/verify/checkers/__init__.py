"""The checkers of `ackly verify`, one module per family, each function named for the anomaly it
finds (docs/guarantees.md s.8). All read a `model.Model` built once from the history; none has side
effects. check.py runs them all and judges the findings (expectations.py)."""
