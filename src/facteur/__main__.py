"""``python -m facteur`` runs the CLI."""

from __future__ import annotations

from facteur.cli.main import main

if __name__ == "__main__":  # not when a multiprocessing forkserver imports the parent's main module
    main()
