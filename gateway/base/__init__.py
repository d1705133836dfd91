"""Lowest layer: error reasons, identifier formats, wire names. No I/O, no grpc server."""
