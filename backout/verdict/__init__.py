"""The compatibility verdict: what rolling a release back will cost, known before the deploy.

`classify` judges SQL statements with PostgreSQL's parser, `verdict` combines them into a
release's verdict (and counts at rollback time what a down would lose), `policy` enforces
BACKOUT_REQUIRE, `check` is `backout check`'s library half, and `cost` reads the recorded
verdicts back for rollback plans and BACKOUT_AUTO_ROLLBACK=auto.
"""
