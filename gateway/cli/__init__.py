"""The `jisr` command."""
