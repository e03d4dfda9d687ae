"""A dead letter keeps why support discarded it (or what a retry found), next to who and when."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("wallets", "0004_ledger_digests"),
    ]

    operations = [
        migrations.AddField(
            model_name="deadletter",
            name="resolution_reason",
            field=models.TextField(blank=True, default=""),
        ),
    ]
