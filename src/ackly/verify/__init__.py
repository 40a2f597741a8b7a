"""`ackly verify`: run a workload under faults, record its history, check it (GUARANTEES.md s.7-8)."""
