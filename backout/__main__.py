from backout.cli import entry

entry()
