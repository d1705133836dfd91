"""The reference citizen portal: a web app a portal institution runs for citizens.

The gateway trusts the portal institution (its certificate and signed tokens, the
`citizen_portal` role of the policy), never the citizen's browser: the portal signs the
citizen in by its own means, then asks the gateway on the citizen's behalf. The contract
a portal keeps is docs/citizen-portal.md; this package is one way to keep it.
"""
