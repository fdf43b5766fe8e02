"""A differential fuzzer for the PostgreSQL source (issue 13).

A seed makes a random workload (``generator``: operations as small dataclasses, ``ops``) with the column
types of ``types``; ``execute`` runs it on a real source PostgreSQL while ``replica`` runs the daemon as a
child process (started, SIGKILLed, crashed at named points); ``compare`` checks every table of the target
against the source in canonical form after the daemon caught up; ``shrink`` cuts a failing workload down to
a few operations. ``run`` ties them together and is the command line of ``scripts/fuzz.sh``; the CI seeds
are in ``tests/sources/postgres/test_fuzz_pg.py``.
"""
