"""The mutation check: named guarantee-breaking patches (``catalog``) and the runner that applies each to a
scratch copy and requires its named tests to fail (``run``; ``scripts/mutants.sh``)."""
