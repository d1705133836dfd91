"""Registry change events: the log, its sources, subscriptions and delivery (docs/events.md)."""
