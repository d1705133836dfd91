"""Public transparency: a month's indicators, privacy-safe and signed (docs/transparency.md)."""
