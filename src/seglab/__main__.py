"""``python -m seglab <command> ...``: the same as the ``seglab`` command."""

from seglab.cli import main

main()
