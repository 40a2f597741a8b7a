"""`ackly verify`: run a workload under faults, record its history, check it (docs/guarantees.md s.7-8)."""
