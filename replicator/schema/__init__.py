"""Table definitions (``schemas/``), schema evolution, column policies, and conversion of source values to the
tables' types."""
