"""`python -m runner ...` is `hw3 ...`: what torchrun starts in each process."""

from runner.commands.cli import main

main()
