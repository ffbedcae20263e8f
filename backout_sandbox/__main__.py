"""`python -m backout_sandbox`: the local Heroku in the foreground (what `backout sandbox` runs)."""

from backout_sandbox.server import main

if __name__ == "__main__":
    raise SystemExit(main())
