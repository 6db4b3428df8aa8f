"""`python -m search.cli` runs the command line (as the `siamese-lab` script does)."""

from search.cli import main

main()
