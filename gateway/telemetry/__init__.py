"""Tracing, metrics and logs; none carries personal data."""
