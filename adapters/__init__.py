"""Per-institution adapters to the registries behind the gateway (RNP, RSU, CNSS, ANSS).

Each institution's module says which record kinds it holds and how to read them from the
embedded SQLite registry; any institution can instead be reached remotely through its
MinistryBackend (see remote.py). Both transports satisfy the one `Adapter` protocol.
"""
