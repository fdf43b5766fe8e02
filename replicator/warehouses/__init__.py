"""Warehouses: the targets staged batches are merged into, exactly once and in order."""
