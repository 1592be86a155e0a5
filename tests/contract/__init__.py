"""Tests that hold the code and the clients to openapi.yaml: drift, names, serving, headers,
Schemathesis, generated clients, the docs page, the round trip of every writable field."""
