"""backout: make Heroku deploys undoable."""

__version__ = "0.1.0"
