"""Guarantee-breaking patches and the tests that must catch each of them (``scripts/mutants.sh``).

Each mutant is a few exact text replacements in the product code, made in a scratch copy of the repository
only. Its ``tests`` are pytest node ids: every one of them must fail with the mutant in place, or the
guarantee it names is not guarded (the mutant "survives" and CI fails). ``test_guarantees_mutants`` checks
in the ordinary test run that every replacement still finds its text exactly as often as stated, so a
refactor that moves the code makes that test fail instead of silently disabling the mutant.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Edit:
    path: str  # relative to the repository root
    old: str
    new: str
    count: int = 1  # how often ``old`` occurs in the file (all occurrences are replaced)


@dataclass(frozen=True, slots=True)
class Mutant:
    name: str
    breaks: str  # the guarantee (DESIGN.md) the patch breaks, as a sentence
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]


CRASH = "tests/test_crash_safety.py::"
CONFORMANCE = "tests/warehouses/test_warehouse_conformance.py::"
LEDGER = "tests/test_guarantees_ledger.py::"
# The DMS fuzzer's CI seeds (tests/sources/dms/test_fuzz_dms.py): random feeds find these mutants too.
FUZZ = (
    "tests/sources/dms/test_fuzz_dms.py::"
    "test_a_random_dms_feed_ends_in_the_target_exactly_as_the_reference_reads_it"
)

KEYS = "tests/test_key_changes.py::"

MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "ack_before_stage",
        "Nothing lost: a position is acknowledged only after its batch is durably staged.",
        (
            Edit(
                "replicator/pipeline.py",
                "        try:\n            manifest = self.stager.stage(batch, keep=self._keep_rejected)\n",
                "        self.source.ack({batch.table: batch.last})\n"
                "        try:\n            manifest = self.stager.stage(batch, keep=self._keep_rejected)\n",
            ),
        ),
        (
            "tests/test_pipeline_acks.py::"
            "test_a_re_yielded_change_that_is_only_buffered_is_not_acknowledged_before_it_is_staged",
            CRASH + "test_duckdb_applies_every_change_exactly_once_after_a_kill_at[mid_stage]",
            CRASH + "test_postgres_applies_every_change_exactly_once_after_a_kill_at[mid_stage]",
            FUZZ + "[30]",
        ),
    ),
    Mutant(
        "ledger_outside_the_merge_transaction",
        "Nothing applied twice: the ledger row commits in the merge's transaction.",
        (
            Edit(
                "replicator/warehouses/sql_base.py",
                '        crash_point("mid_merge")\n'
                "        for statement in d.ledger_record(manifest):\n"
                "            self._execute(statement)\n",
                '        crash_point("mid_merge")\n',
            ),
            Edit(
                "replicator/warehouses/sql_base.py",
                "            self._execute(d.drop_view(table) if table == view else d.drop_table(table))\n",
                "            self._execute(d.drop_view(table) if table == view else d.drop_table(table))\n"
                "        self._commit()\n"
                "        self._in_transaction(d.ledger_record(manifest))\n        self._begin()\n",
            ),
        ),
        (
            LEDGER + "test_a_ledger_write_that_fails_leaves_the_target_unchanged_and_the_batch_applies_once_"
            "later[duckdb]",
            LEDGER + "test_a_ledger_write_that_fails_leaves_the_target_unchanged_and_the_batch_applies_once_"
            "later[postgres]",
            LEDGER + "test_a_table_whose_ledger_rows_are_refused_stays_unchanged_while_others_go_on_then_"
            "catches_up_once",
            CRASH + "test_postgres_applies_every_change_exactly_once_after_a_kill_at[after_ack@4]",
        ),
    ),
    Mutant(
        "replayed_batch_not_looked_up_in_the_ledger",
        "Nothing applied twice: a batch already in the ledger is skipped.",
        (
            Edit(
                "replicator/warehouses/sql_base.py",
                "        if self._query(d.ledger_lookup(manifest.batch_id)):\n",
                "        if False:\n",
            ),
        ),
        (
            CONFORMANCE + "test_replaying_an_applied_batch_changes_nothing[duckdb]",
            CRASH + "test_duckdb_applies_every_change_exactly_once_after_a_kill_at[after_merge]",
            FUZZ + "[49]",
        ),
    ),
    Mutant(
        "staged_batch_forgotten_before_its_merge_commits",
        "Nothing lost: a staged batch is removed only after its merge and ledger row commit.",
        (
            Edit(
                "replicator/pipeline.py",
                '            local = self._local_file(manifest, Path(tmp) / "batch")\n',
                '            local = self._local_file(manifest, Path(tmp) / "batch")\n'
                "            self.stager.store.delete(manifest.data_key.removesuffix"
                '(".parquet") + ".json")\n',
            ),
        ),
        (
            CRASH + "test_duckdb_applies_every_change_exactly_once_after_a_kill_at[mid_merge]",
            CRASH + "test_duckdb_applies_every_change_exactly_once_after_a_kill_at[mid_merge@3]",
        ),
    ),
    Mutant(
        "buffer_does_not_drop_changes_already_staged",
        "Nothing applied twice: changes re-read after a restart that are already staged are dropped.",
        (
            Edit(
                "replicator/buffer.py",
                "        if seen is not None and change.position.value <= seen.value:\n",
                "        if False:\n",
            ),
            Edit(
                "replicator/buffer.py",
                "        if seen is not None and data.num_rows and chunk.first.value <= seen.value:\n",
                "        if False:\n",
            ),
        ),
        (
            "tests/test_buffer_and_stage.py::test_buffer_drops_changes_already_staged_after_a_restart",
            CRASH + "test_duckdb_applies_every_change_exactly_once_after_a_kill_at[after_stage]",
            CRASH + "test_duckdb_applies_every_change_exactly_once_after_a_kill_at[after_stage@4]",
            CRASH + "test_postgres_applies_every_change_exactly_once_after_a_kill_at[after_stage]",
            FUZZ + "[35]",
        ),
    ),
    Mutant(
        "batches_applied_out_of_order",
        "Order: the staged batches of a table apply oldest first.",
        (
            Edit(
                "replicator/pipeline.py",
                "        pending = list(self.stager.pending(table))\n",
                "        pending = list(self.stager.pending(table))[::-1]\n",
            ),
        ),
        (
            CRASH + "test_duckdb_applies_every_change_exactly_once_after_a_kill_at[after_ack@4]",
            CRASH + "test_duckdb_applies_every_change_exactly_once_after_a_kill_at[after_stage]",
            CRASH + "test_duckdb_applies_every_change_exactly_once_after_a_kill_at[mid_merge]",
            CRASH + "test_postgres_applies_every_change_exactly_once_after_a_kill_at[after_ack]",
            FUZZ + "[7]",
        ),
    ),
    Mutant(
        "first_change_per_key_wins",
        "Order: within a batch the last change per primary key wins by position (_seq), not another one.",
        (
            Edit("replicator/warehouses/dialect.py", "ORDER BY {keys}, {seq} DESC", "ORDER BY {keys}, {seq}"),
            Edit("replicator/warehouses/dialect.py", "ORDER BY {seq} DESC)", "ORDER BY {seq})"),
            Edit("replicator/warehouses/dialect.py", 'last = f"max({seq})"', 'last = f"min({seq})"'),
        ),
        (
            CONFORMANCE + "test_the_last_change_per_key_wins_within_a_batch[duckdb]",
            CONFORMANCE + "test_the_last_change_per_key_wins_within_a_batch[postgres]",
            CONFORMANCE + "test_the_last_change_per_key_wins_within_a_batch[redshift]",
            FUZZ + "[7]",
        ),
    ),
    Mutant(
        "delete_then_insert_of_a_key_ends_as_delete",
        "Order: a delete followed by an insert of the same key in one batch ends as the insert.",
        (
            Edit(
                "replicator/warehouses/dialect.py",
                "ORDER BY {keys}, {seq} DESC",
                "ORDER BY {keys}, ({quote_ident(OP_COLUMN)} = 'D') DESC, {seq} DESC",
            ),
            Edit(
                "replicator/warehouses/dialect.py",
                "ORDER BY {seq} DESC)",
                "ORDER BY ({quote_ident(OP_COLUMN)} = 'D') DESC, {seq} DESC)",
            ),
            Edit(
                "replicator/warehouses/dialect.py",
                'last = f"max({seq})"',
                "last = f\"arg_max({seq}, ({quote_ident(OP_COLUMN)} = 'D', {seq}))\"",
            ),
        ),
        (
            CONFORMANCE + "test_the_last_change_per_key_wins_within_a_batch[duckdb]",
            CONFORMANCE + "test_the_last_change_per_key_wins_within_a_batch[postgres]",
            CONFORMANCE + "test_the_last_change_per_key_wins_within_a_batch[redshift]",
            FUZZ + "[10]",
        ),
    ),
    Mutant(
        "unchanged_columns_not_carried_on_a_key_change",
        "Nothing lost: a key change keeps the values it did not send (issue 13 defect 1): the merge takes"
        " them from the old key's row.",
        (
            Edit(
                "replicator/warehouses/sql_base.py",
                "        if info.moves and info.unchanged:\n",
                "        if False:\n",
            ),
        ),
        (
            KEYS + "test_a_key_change_keeps_the_unchanged_large_value_of_the_row_it_moves[duckdb]",
            KEYS + "test_a_key_change_keeps_the_unchanged_large_value_of_the_row_it_moves[postgres]",
            KEYS + "test_a_key_change_keeps_the_unchanged_large_value_of_the_row_it_moves[redshift]",
            "tests/sources/postgres/test_pg_key_changes.py::test_key_changes_keep_unchanged_toasted_values_in_the_target",
        ),
    ),
    Mutant(
        "key_change_in_a_batch_forgets_the_earlier_values_of_its_old_key",
        "Nothing lost: a chain of key changes in one batch carries the unsent values along the chain.",
        (
            Edit(
                "replicator/schema/convert.py",
                "            prev = latest.pop(old_key, None)\n",
                "            latest.pop(old_key, None)\n            prev = None\n",
            ),
        ),
        (
            KEYS + "test_a_chain_of_key_changes_in_one_batch_ends_with_the_first_keys_value[duckdb]",
            KEYS + "test_a_key_change_in_the_batch_of_the_insert_takes_the_inserted_value[duckdb]",
        ),
    ),
)
