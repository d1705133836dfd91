"""gRPC services: method tables over the call engine.

RegistryExchange, ConsentRegistry and AuditTrail.
"""
