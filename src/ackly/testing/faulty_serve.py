"""`ackly serve` with planted bugs switched on: for tests that prove a checker catches them.

    python -m ackly.testing.faulty_serve --fault serve-above-hw [--fault ...] -- serve --port ...
    python -m ackly.testing.faulty_serve --record-flushes DATA_DIR/flushed-lengths -- serve ...

starts the normal `ackly` command line (everything after `--`) in a process whose broker node
has the named fault points of `ackly.broker.faults` enabled from the moment it is built. This
module is the only way a broker process gets a fault point: `ackly serve` has no such option,
and no config reaches `FaultPoints` (broker/faults.py). `BrokerProcess(faults=...)` and
`ClusterProcesses(faults=...)` start brokers through it.

`--fault disk-error` is a fault of the disk, not of the node: the broker gets a real disk whose
next fsync of a `.log` file fails with EIO each time the process receives SIGUSR1, and whose
lost pages are cut when the process exits (testing/disk_faults.py).

`--record-flushes PATH` gives the broker a `RecordingDisk` (testing/flushed_lengths.py): every
completed fsync of a log file records the length it made durable in PATH, so that a test can
cut the files back to what a power loss would leave (verify's "lose-unflushed" fault).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from ackly.broker.faults import KNOWN_FAULTS

DISK_ERROR = "disk-error"  # SIGUSR1 fails the next fsync of a .log file (testing/disk_faults.py)


def enable_at_start(names: Sequence[str]) -> None:
    """Make every BrokerNode the server builds from now on start with `names` enabled."""
    import ackly.server.app as app

    unknown = sorted(set(names) - KNOWN_FAULTS)
    if unknown:
        raise SystemExit(f"unknown fault point(s) {unknown}; known: {sorted(KNOWN_FAULTS)}")
    base: Any = getattr(app, "BrokerNode")  # noqa: B009  (patched below, by name)

    class FaultyBrokerNode(base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            for name in names:
                self.faults.enable(name)

    setattr(app, "BrokerNode", FaultyBrokerNode)  # noqa: B010


def record_flushes_at(record_path: str, failing: bool = False) -> None:
    """Make every broker the server builds from now on use a `RecordingDisk` (whose fsyncs
    fail on SIGUSR1 too, with `failing`)."""
    import ackly.server.app as app
    from ackly.testing.disk_faults import FailingFile
    from ackly.testing.flushed_lengths import RecordingDisk

    class FailingRecordingDisk(RecordingDisk):
        file_class = FailingFile

    disk_class = FailingRecordingDisk if failing else RecordingDisk
    setattr(app, "RealDisk", lambda: disk_class(record_path))  # noqa: B010


def fail_fsyncs_on_signal() -> None:
    """Make every broker the server builds from now on use a disk whose fsyncs fail on SIGUSR1."""
    import ackly.server.app as app
    from ackly.log.disk import RealDisk
    from ackly.testing.disk_faults import FailingFile, arm_on_signal

    class FailingDisk(RealDisk):
        file_class = FailingFile

    arm_on_signal()
    setattr(app, "RealDisk", FailingDisk)  # noqa: B010


def parse_args(argv: Sequence[str]) -> tuple[list[str], str | None, list[str]]:
    """(fault names, the --record-flushes path or None, the ackly arguments after `--`)."""
    faults: list[str] = []
    record: str | None = None
    args = list(argv)
    rest: list[str] = []
    while args:
        arg = args.pop(0)
        if arg == "--":
            rest = args
            break
        if arg == "--record-flushes" and args:
            record = args.pop(0)
        elif arg == "--fault" and args:
            faults.append(args.pop(0))
        elif arg.startswith("--fault="):
            faults.append(arg.split("=", 1)[1])
        else:
            raise SystemExit(f"usage: python -m ackly.testing.faulty_serve [--fault NAME ...] "
                             f"[--record-flushes PATH] -- serve ...; unexpected {arg!r}")
    return faults, record, rest


def main(argv: Sequence[str] | None = None) -> None:
    faults, record, rest = parse_args(sys.argv[1:] if argv is None else argv)
    disk_error = DISK_ERROR in faults
    faults = [name for name in faults if name != DISK_ERROR]
    enable_at_start(faults)
    if disk_error:
        fail_fsyncs_on_signal()
    if record is not None:
        record_flushes_at(record, failing=disk_error)
    from ackly.cli.main import cli

    enabled = [*faults, DISK_ERROR] if disk_error else faults
    print(f"ackly test broker: fault points enabled: {', '.join(enabled) or 'none'}", flush=True)
    cli(rest, prog_name="ackly")


if __name__ == "__main__":
    main()
