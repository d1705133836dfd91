"""`make bench`: the gateway against bare echo servers of the same server API, one run.

Every server and the load generator run in their own processes on 127.0.0.1; every load
loop is bounded in calls and in seconds. Entry point: `python -m bench.run`.
"""
