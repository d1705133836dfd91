"""The DCI facade (docs/dci.md): the Digital Convergence Initiative's social-registry REST
API over the same call engine as the gRPC gateway, in its own process."""
