"""A narrow ledger row (issue 14): the kind as a one-byte code, a 64-bit fingerprint digest, INT
generation and version, no `source` or `flushed_at`, NULL for no actor; the event id and the key
digest found through the history index (made unique: student, accepted time, event id) instead
of indexes of their own; the day's index without the kind.

Online on MariaDB: the new columns are added instantly (nullable), existing rows are converted in
batches of ids, each committed on its own (a production ledger never sits in one transaction),
and one ``ALTER TABLE … ALGORITHM=INPLACE, LOCK=NONE`` swaps the columns and the indexes while
reads and writes go on; it rebuilds the table, which returns the dropped columns' space. Old
processes must stop writing ledger rows before that last statement (they name columns it drops):
a row one of them wrote after the last batch fails the swap (a NULL kind), loudly, losing nothing.
Elsewhere (SQLite: `make run`'s embedded mode) the same steps run as Django's own operations.
"""

import uuid
from typing import Any

from django.db import migrations, models

import wallets.models

BATCH = 5000
# wallets.models.EVENT_KIND_CODES, frozen here: a migration must not change with the code.
KIND_CODES = {"lesson": 1, "service": 2, "freeze_earned": 3, "freeze_used": 4, "streak_restored": 5}
TABLE = "wallets_ledgerevent"


def convert(apps: Any, schema_editor: Any) -> None:
    """Copy every row's values into the new columns, batch by batch of ids, until caught up with the
    rows written meanwhile (ids only grow)."""
    connection = schema_editor.connection
    q = connection.ops.quote_name
    case = " ".join(f"WHEN '{name}' THEN {code}" for name, code in KIND_CODES.items())
    update = (
        f"UPDATE {q(TABLE)} SET kind_code = CASE kind {case} END, fp8 = SUBSTR(fp_digest, 1, 8), "  # noqa: S608
        "generation32 = generation, version32 = version, actor = NULLIF(actor, '') WHERE id > %s AND id <= %s"
    )
    done = 0
    with connection.cursor() as cursor:
        while True:
            cursor.execute(f"SELECT MAX(id) FROM {q(TABLE)}")  # noqa: S608
            (top,) = cursor.fetchone()
            if top is None or top <= done:
                return
            while done < top:
                cursor.execute(update, [done, done + BATCH])
                done += BATCH


STATE_OPERATIONS = [
    migrations.RemoveIndex(model_name="ledgerevent", name="ledger_player_accepted"),
    migrations.RemoveIndex(model_name="ledgerevent", name="ledger_idem_digest"),
    migrations.RemoveIndex(model_name="ledgerevent", name="ledger_player_day"),
    migrations.RemoveField(model_name="ledgerevent", name="kind"),
    migrations.RemoveField(model_name="ledgerevent", name="fp_digest"),
    migrations.RemoveField(model_name="ledgerevent", name="generation"),
    migrations.RemoveField(model_name="ledgerevent", name="version"),
    migrations.RemoveField(model_name="ledgerevent", name="source"),
    migrations.RemoveField(model_name="ledgerevent", name="flushed_at"),
    migrations.RenameField(model_name="ledgerevent", old_name="kind_code", new_name="kind"),
    migrations.RenameField(model_name="ledgerevent", old_name="fp8", new_name="fp_digest"),
    migrations.RenameField(model_name="ledgerevent", old_name="generation32", new_name="generation"),
    migrations.RenameField(model_name="ledgerevent", old_name="version32", new_name="version"),
    migrations.AlterField(
        model_name="ledgerevent",
        name="kind",
        field=wallets.models.KindField(
            choices=[
                ("lesson", "lesson completed"),
                ("service", "service award"),
                ("freeze_earned", "streak freeze earned"),
                ("freeze_used", "streak freeze used"),
                ("streak_restored", "streak restored"),
            ],
            max_length=16,
        ),
    ),
    migrations.AlterField(model_name="ledgerevent", name="generation", field=models.IntegerField(default=0)),
    migrations.AlterField(model_name="ledgerevent", name="version", field=models.IntegerField()),
    migrations.AlterField(
        model_name="ledgerevent",
        name="event_id",
        field=models.UUIDField(default=uuid.uuid4, editable=False),
    ),
    migrations.AddIndex(
        model_name="ledgerevent",
        index=models.Index(fields=["player", "local_day"], name="ledger_player_day"),
    ),
    migrations.AddConstraint(
        model_name="ledgerevent",
        constraint=models.UniqueConstraint(fields=("player", "accepted_at", "event_id"), name="ledger_player_accepted"),
    ),
]


class SwapColumns(migrations.operations.base.Operation):
    """The new columns and indexes in place of the old: one online ALTER on MariaDB, Django's
    operations one after another elsewhere."""

    reversible = False
    reduces_to_sql = False

    def state_forwards(self, app_label: str, state: Any) -> None:
        for operation in STATE_OPERATIONS:
            operation.state_forwards(app_label, state)

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        connection = schema_editor.connection
        # Rows written while the batches ran.
        convert(None, schema_editor)
        if connection.vendor != "mysql":
            for operation in STATE_OPERATIONS:
                state = from_state.clone()
                operation.state_forwards(app_label, state)
                operation.database_forwards(app_label, schema_editor, from_state, state)
                from_state = state
            return
        q = connection.ops.quote_name
        with connection.cursor() as cursor:
            constraints = connection.introspection.get_constraints(cursor, TABLE)
        event_id_unique = [
            name
            for name, c in constraints.items()
            if c["unique"] and not c["primary_key"] and c["columns"] == ["event_id"]
        ]
        schema_editor.execute(
            f"ALTER TABLE {q(TABLE)} "
            + "".join(f"DROP INDEX {q(name)}, " for name in event_id_unique)
            + "DROP INDEX ledger_player_accepted, DROP INDEX ledger_player_day, DROP INDEX ledger_idem_digest, "
            "DROP COLUMN kind, DROP COLUMN fp_digest, DROP COLUMN generation, DROP COLUMN version, "
            "DROP COLUMN source, DROP COLUMN flushed_at, "
            "CHANGE kind_code kind tinyint unsigned NOT NULL, "
            "CHANGE fp8 fp_digest binary(8) NULL, "
            "CHANGE generation32 generation integer NOT NULL, "
            "CHANGE version32 version integer NOT NULL, "
            "ADD CONSTRAINT ledger_player_accepted UNIQUE (player_id, accepted_at, event_id), "
            "ADD INDEX ledger_player_day (player_id, local_day), "
            "ALGORITHM=INPLACE, LOCK=NONE"
        )

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        raise NotImplementedError("the narrow ledger cannot be widened again")

    def describe(self) -> str:
        return "Swap the ledger's converted columns and indexes in"


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("players", "0001_initial"),
        ("wallets", "0005_deadletter_resolution_reason"),
    ]

    operations = [
        migrations.AlterField(
            model_name="ledgerevent",
            name="actor",
            field=models.CharField(blank=True, max_length=160, null=True),
        ),
        migrations.AddField(
            model_name="ledgerevent",
            name="kind_code",
            field=wallets.models.KindField(null=True, max_length=16),
        ),
        migrations.AddField(
            model_name="ledgerevent",
            name="fp8",
            field=wallets.models.DigestField(blank=True, length=8, null=True),
        ),
        migrations.AddField(model_name="ledgerevent", name="generation32", field=models.IntegerField(null=True)),
        migrations.AddField(model_name="ledgerevent", name="version32", field=models.IntegerField(null=True)),
        migrations.RunPython(convert, migrations.RunPython.noop, atomic=False),
        SwapColumns(),
    ]
