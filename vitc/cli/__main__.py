"""``python -m vitc.cli`` (also what ``torchrun -m vitc.cli`` runs)."""

from vitc.cli import main

main()
