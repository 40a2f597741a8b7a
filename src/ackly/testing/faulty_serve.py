"""`ackly serve` with planted bugs switched on: for tests that prove a checker catches them.

    python -m ackly.testing.faulty_serve --fault serve-above-hw [--fault ...] -- serve --port ...

starts the normal `ackly` command line (everything after `--`) in a process whose broker node
has the named fault points of `ackly.broker.faults` enabled from the moment it is built. This
module is the only way a broker process gets a fault point: `ackly serve` has no such option,
and no config reaches `FaultPoints` (DESIGN.md s.7). `BrokerProcess(faults=...)` and
`ClusterProcesses(faults=...)` start brokers through it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from ackly.broker.faults import KNOWN_FAULTS


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


def split_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(fault names, the ackly arguments after `--`)."""
    faults: list[str] = []
    args = list(argv)
    rest: list[str] = []
    while args:
        arg = args.pop(0)
        if arg == "--":
            rest = args
            break
        if arg == "--fault" and args:
            faults.append(args.pop(0))
        elif arg.startswith("--fault="):
            faults.append(arg.split("=", 1)[1])
        else:
            raise SystemExit(f"usage: python -m ackly.testing.faulty_serve --fault NAME ... -- serve ...; "
                             f"unexpected {arg!r}")
    return faults, rest


def main(argv: Sequence[str] | None = None) -> None:
    faults, rest = split_args(sys.argv[1:] if argv is None else argv)
    enable_at_start(faults)
    from ackly.cli.main import cli

    print(f"ackly test broker: fault points enabled: {', '.join(faults) or 'none'}", flush=True)
    cli(rest, prog_name="ackly")


if __name__ == "__main__":
    main()
