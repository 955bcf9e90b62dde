"""``python -m actstats`` runs the command-line interface."""

from actstats.cli import main

main()
