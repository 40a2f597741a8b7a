from ackly.cli.main import main

# Guarded: the log cleaner's worker process (spawned) imports this module without running it.
if __name__ == "__main__":
    main()
