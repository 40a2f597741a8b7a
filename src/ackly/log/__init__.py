"""One partition's log on disk: segments, indexes, checkpoints, recovery (docs/architecture.md, "On disk").

`PartitionLog` is the entry point; every file is reached through `disk.Disk`, so the same
code runs on the real filesystem (`RealDisk`) and in the simulator (`SimDisk`).
"""
