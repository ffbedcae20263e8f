"""Rollbacks of a Heroku app: enqueue and follow (enqueue), the plan (plan), and the database step (database)."""
