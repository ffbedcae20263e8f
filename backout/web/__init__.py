"""`backout web`: the page a team reads during an incident, one per app.

`facts` gathers what the ledger (and Heroku's release list) says about an app, `chart` draws the
health probes with the releases and rollbacks as SVG, `views` renders the HTML, `actions` plans and
enqueues a rollback from the page, `auth` checks the password and the forms' CSRF tokens, and
`server` answers HTTP with the standard library's threading server.
"""
