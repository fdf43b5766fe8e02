"""The DMS differential fuzzer (issue 13): a seed draws DMS endpoint settings, tables and a list of feed
operations (files with edge values and bad rows, daemon runs, crash points, timed SIGKILLs) (``feed``);
``encode`` writes them as DMS would; ``run`` replicates them with the real daemon and compares the target,
the quarantine and the ledger with the independent reference reader (``tests/helpers/dms_reference.py``);
``shrink`` reduces a failure to a few operations. CI: ``tests/sources/dms/test_fuzz_dms.py``; long runs:
``scripts/fuzz_dms.sh``.
"""
