"""`make bench` (`python -m bench.run`): the gateway against bare echo servers of the same
server API, each step's cost in-process; docs/performance.md."""
