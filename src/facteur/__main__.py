"""``python -m facteur`` runs the CLI."""

from __future__ import annotations

from facteur.cli.main import main

if __name__ == "__main__":
    main()
