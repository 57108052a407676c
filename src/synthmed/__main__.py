"""``python -m synthmed`` (used with ``torchrun -m synthmed train ...``)."""

from synthmed.cli import main

main()
