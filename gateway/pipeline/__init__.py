"""The exchange pipeline, free of gRPC: validate, fetch from the registries, decide, project."""
