"""The DPO and regulator console: a web app in its own process (`jisr console serve`).

It is a client of the gateway like any partner system: officers log in to the console,
and each page that shows records is an AuditTrail call made with the officer's
institution's credentials and the officer's pseudonymous id as the token's `sub`, so the
gateway's policy decides what an officer sees and the trail records every look.
"""
