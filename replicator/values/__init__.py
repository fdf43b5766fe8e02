"""Logical column types and how text and temporal values map to Arrow."""
