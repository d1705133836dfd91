"""Running the gateway as a service: how many processes, their supervision, and the
plaintext probes an orchestrator asks (docs/deployment.md).

- `cpus.py`: the CPUs this process may use (affinity and the cgroup's quota);
- `readiness.py`: named checks, each bounded in time, whose verdicts a probe reports;
- `probes.py`: the liveness and readiness HTTP endpoints, on their own address;
- `supervisor.py`: N gateway processes on one port, restarted when one dies.

Nothing here knows the exchange: the composition root (gateway/server.py) hands it the
checks, and the supervisor runs `jisr serve` itself in each worker.
"""
