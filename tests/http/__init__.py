"""Tests of impl/http/: auth and tokens, errors and envelopes, hostile input, rate limits, CORS,
request bodies."""
