"""One Python name for the streak lost at the last break: the fields are renamed, their columns
keep their names (``db_column``), so this changes the model state only (nothing runs in the
database)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("wallets", "0006_narrow_ledger")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RenameField("playerwallet", "streak_before_break", "streak_lost"),
                migrations.AlterField(
                    "playerwallet",
                    "streak_lost",
                    models.IntegerField(default=0, db_column="streak_before_break"),
                ),
                migrations.RenameField("ledgerevent", "break_after", "streak_lost_after"),
                migrations.AlterField(
                    "ledgerevent",
                    "streak_lost_after",
                    models.IntegerField(default=0, db_column="break_after"),
                ),
            ],
            database_operations=[],
        )
    ]
