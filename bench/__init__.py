"""`make bench`: the gateway's full signed, mTLS pipeline against bare echo servers of the
same server API (plaintext and mTLS), in one run, and each step's cost in-process.

Every server and the load generator run in their own processes on 127.0.0.1; every load
loop is bounded in calls and in seconds; request tokens are signed before each loop.
Entry point: `python -m bench.run`.
"""
