"""The sandbox: a local Heroku on loopback (Platform API and Data API subset)."""
