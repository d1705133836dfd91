"""The tamper-evident audit trail: records, hash chains, signed checkpoints, stores."""
