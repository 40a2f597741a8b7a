from ackly.cli.main import main  # imports kio without hypothesis (ackly/kio_import.py)

# Guarded: the log cleaner's worker process (spawned) imports this module without running it.
if __name__ == "__main__":
    main()
