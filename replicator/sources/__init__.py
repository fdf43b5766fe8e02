"""Change sources: each yields ``Change``s in source order and persists what has been durably staged."""
