import sys

# kio registers test-data strategies for its types at import whenever hypothesis can be
# imported (a development virtualenv): no command uses them, and it is about a fifth of the
# command's import time. Hidden before ackly.cli.main's first import of kio (the `serve`
# command's own guard comes after it); only here, in a process of its own.
sys.modules.setdefault("hypothesis", None)  # type: ignore[arg-type]

from ackly.cli.main import main  # noqa: E402  (after the line above)

# Guarded: the log cleaner's worker process (spawned) imports this module without running it.
if __name__ == "__main__":
    main()
