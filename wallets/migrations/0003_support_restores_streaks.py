"""Gave the Support group the wallet permissions; that role now lives in the composition app
(memora 0001, which is idempotent). Kept as a no-op under its name: existing databases applied it."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("wallets", "0002_streak_freezes_and_restore")]

    operations: list = []
