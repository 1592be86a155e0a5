"""The deploy recipe's parts on loopback, each in its own module: PgBouncer in transaction mode
(pgbouncer.py), `task-api serve` replicas (replicas.py), HAProxy with health checks and safe
retries (haproxy.py), and the whole stack with its rolling restart (stack.py). Used by
scripts/deploy_local.py, scripts/bench_replica_kill.py and the tests."""
