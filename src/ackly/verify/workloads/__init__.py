"""Workloads: client workers that drive a cluster and record each operation in the history.

Every worker runs on its own thread until the run's stop event, and bounds every client call
by `WorkloadContext.op_timeout_s`. `queue.py` sends unique values per key and polls them back
(assign and subscribe); `transactional.py` sends across partitions in transactions and runs
consume-transform-produce with the offsets sent in the transaction.
"""
