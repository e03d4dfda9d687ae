"""Created the Support group; that role now lives in the composition app (memora 0001, which is
idempotent). Kept as a no-op under its name: existing databases applied it."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("devices", "0001_initial")]

    operations: list = []
