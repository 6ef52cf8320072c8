"""`dlrmprof` commands of this area (see dlrmprof/cli.py)."""

COMMANDS: list = []
