"""HTTP plumbing, generic: the generated routes' request handling, JSON bodies, guards and
middleware, the envelopes, the mapping of every error to its envelope, bearer auth and rate
limits, and the served contract and docs. Uses impl.platform; knows no resource."""
