"""Importing kio without its test-data strategies.

kio's phantom types register hypothesis strategies for themselves at import whenever
hypothesis can be imported (it can in a development virtualenv). No broker or command uses
them, and they are about a fifth of an `ackly` command's import time and a third of an
in-process broker's. So entry points import kio first with hypothesis hidden: None in
sys.modules makes `import hypothesis` raise ImportError (the import system's documented
behaviour), which kio takes for "not installed". Hypothesis stays importable afterwards, and
a process that imported hypothesis (or kio) first keeps kio's strategies.
"""

from __future__ import annotations

import sys


def import_kio_without_hypothesis() -> None:
    if "hypothesis" in sys.modules or "kio.static._phantom" in sys.modules:
        return
    sys.modules["hypothesis"] = None  # type: ignore[assignment]
    try:
        import kio.static._phantom  # noqa: F401
    finally:
        del sys.modules["hypothesis"]
