"""Support may restore a streak (the admin action needs wallets.change_playerwallet) and read wallets."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

PERMISSIONS = ["view_playerwallet", "change_playerwallet", "view_ledgerevent"]


def grant(apps, schema_editor):
    using = schema_editor.connection.alias
    app_config = apps.get_app_config("wallets")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0, using=using)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.using(using).get_or_create(name="Support")
    for codename in PERMISSIONS:
        group.permissions.add(
            Permission.objects.using(using).get(content_type__app_label="wallets", codename=codename)
        )


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.using(schema_editor.connection.alias).filter(name="Support").first()
    if group is not None:
        group.permissions.remove(
            *Permission.objects.filter(content_type__app_label="wallets", codename__in=PERMISSIONS)
        )


class Migration(migrations.Migration):
    dependencies = [
        ("wallets", "0002_streak_freezes_and_restore"),
        ("devices", "0002_support_group"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
