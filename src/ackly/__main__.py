from ackly.cli.main import main

main()
