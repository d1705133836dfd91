"""Jisr gateway: the server, its request pipeline, configuration, CLI and client."""
