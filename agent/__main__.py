"""``python -m agent`` (and the PyInstaller entry point of ``dist/dmc``): the dmc command line."""

from agent.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
