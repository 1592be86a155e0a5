"""The handlers of the contract's `system` tag: liveness and readiness probes."""
