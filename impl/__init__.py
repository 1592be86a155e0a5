"""The hand-written part of the Task API, in layers (arrows point down only):

- app.py, asgi.py, cli.py, migrations/: entry points; they compose the layers below.
- generated/ (outside impl): route stubs from openapi.yaml; they call the handlers.
- tasks/, system/: one package per tag of the contract: its handlers (handlers.py) and what
  they use (store, tables, fields...).
- http/: generic HTTP plumbing: route class, bodies, guards, middleware, envelopes, errors.
- platform/: settings, database, logs, tokens, embedded PostgreSQL, migrations runner, serving.

tests/test_layers.py holds the code to it.
"""
