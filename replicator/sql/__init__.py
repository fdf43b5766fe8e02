"""SQL identifiers: the one place that quotes them."""
