"""Data types and their wire conversions."""
