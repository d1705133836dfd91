"""Identity and signatures.

Request tokens, the trust store, receipts, the PKI, the policy and its field masks.
"""
