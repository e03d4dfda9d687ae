"""The ledger keeps digests of the idempotency key and the fingerprint instead of the raw key and
the stored response (a replay's body is rebuilt from the row); events carry their generation; a
dead-letter table. Existing rows are converted in batches, each committed on its own, so a large
production ledger never sits in one migration transaction."""

import hashlib
import json

import django.db.models.deletion
from django.db import migrations, models

import wallets.models

BATCH = 2000
FREEZE_KINDS = ("freeze_used", "freeze_earned")


def _digest_hex(scope, key):
    # wallets.idempotency.key_digest, frozen here: a migration must not change with the code.
    return hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()


def convert(apps, schema_editor):
    LedgerEvent = apps.get_model("wallets", "LedgerEvent")
    using = schema_editor.connection.alias
    last = 0
    while True:
        rows = list(
            LedgerEvent.objects.using(using)
            .filter(id__gt=last)
            .order_by("id")
            .only("id", "kind", "idem_scope", "idem_key", "fingerprint", "response_body")[:BATCH]
        )
        if not rows:
            return
        for row in rows:
            key = row.idem_key
            if key and row.kind in FREEZE_KINDS and "#" in key:
                # A freeze event's key was derived from its request's ("<key>#freeze_used:1"): the
                # events of one request now share the request's digest.
                key = key.rsplit("#", 1)[0]
            if key:
                row.idem_digest = bytes.fromhex(_digest_hex(row.idem_scope or "", key)[:32])
            if row.fingerprint:
                row.fp_digest = bytes.fromhex(row.fingerprint[:32])
            body = row.response_body
            if isinstance(body, str):
                body = json.loads(body)
            if isinstance(body, dict):
                row.capped = bool(body.get("capped", False))
                wallet = body.get("wallet") or {}
                row.xp_day_after = int(wallet.get("xp_today") or 0)
                if "streak_before" in body:
                    row.streak_before = int(body["streak_before"])
        LedgerEvent.objects.using(using).bulk_update(
            rows, ["idem_digest", "fp_digest", "capped", "xp_day_after", "streak_before"]
        )
        last = rows[-1].id


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("players", "0001_initial"),
        ("wallets", "0003_support_restores_streaks"),
    ]

    operations = [
        migrations.AddField(
            model_name="ledgerevent",
            name="capped",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="ledgerevent",
            name="fp_digest",
            field=wallets.models.DigestField(blank=True, length=16, null=True),
        ),
        migrations.AddField(
            model_name="ledgerevent",
            name="generation",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="ledgerevent",
            name="idem_digest",
            field=wallets.models.DigestField(blank=True, length=16, null=True),
        ),
        migrations.AddField(
            model_name="ledgerevent",
            name="streak_before",
            field=models.IntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="ledgerevent",
            name="xp_day_after",
            field=models.IntegerField(default=0),
        ),
        migrations.AddField(
            model_name="playerwallet",
            name="applied_generation",
            field=models.BigIntegerField(default=0),
        ),
        migrations.RunPython(convert, migrations.RunPython.noop, atomic=False),
        migrations.RemoveConstraint(
            model_name="ledgerevent",
            name="ledger_idempotency_unique",
        ),
        migrations.RemoveField(model_name="ledgerevent", name="fingerprint"),
        migrations.RemoveField(model_name="ledgerevent", name="idem_key"),
        migrations.RemoveField(model_name="ledgerevent", name="idem_scope"),
        migrations.RemoveField(model_name="ledgerevent", name="response_body"),
        migrations.RemoveField(model_name="ledgerevent", name="response_status"),
        migrations.AlterField(
            model_name="ledgerevent",
            name="lesson_id",
            field=wallets.models.ExactCharField(blank=True, max_length=64, null=True),
        ),
        migrations.AddIndex(
            model_name="ledgerevent",
            index=models.Index(fields=["idem_digest"], name="ledger_idem_digest"),
        ),
        migrations.CreateModel(
            name="DeadLetter",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("event_id", models.UUIDField(unique=True)),
                ("payload", models.TextField()),
                ("error", models.TextField()),
                ("created_at", models.DateTimeField()),
                ("resolved_at", models.DateTimeField(blank=True, null=True)),
                ("resolution", models.CharField(blank=True, default="", max_length=16)),
                ("resolved_by", models.CharField(blank=True, default="", max_length=160)),
                (
                    "player",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="players.playerprofile"
                    ),
                ),
            ],
            options={
                "verbose_name": "dead letter",
                "indexes": [models.Index(fields=["player", "resolved_at"], name="deadletter_player_open")],
            },
        ),
    ]
