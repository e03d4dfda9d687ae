"""The Support role: what support staff need in the admin, and nothing else. It spans apps, so it
lives in the composition app (the earlier migrations devices 0002 and wallets 0003 that created it
stay, as no-ops, under their names: existing databases applied them).

Students, sessions, the audit, wallets and the ledger are read; authorized devices are changed
(revoke, allow, end sessions, clear login locks) and wallets too (restore a streak). Not service API
keys, not users. Idempotent: run again, it leaves the same group with the same permissions.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Support"
PERMISSIONS = [
    ("players", "view_playerprofile"),
    ("devices", "view_authorizeddevice"),
    ("devices", "change_authorizeddevice"),
    ("devices", "view_playersession"),
    ("devices", "view_deviceauditentry"),
    ("wallets", "view_playerwallet"),
    ("wallets", "change_playerwallet"),
    ("wallets", "view_ledgerevent"),
]


def support_role_ensure(apps, schema_editor):
    using = schema_editor.connection.alias
    for label in sorted({app_label for app_label, _ in PERMISSIONS}):
        app_config = apps.get_app_config(label)
        # The migration state's app configs have no models module; create_permissions skips those.
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0, using=using)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.using(using).get_or_create(name=GROUP)
    group.permissions.add(
        *[
            Permission.objects.using(using).get(content_type__app_label=app_label, codename=codename)
            for app_label, codename in PERMISSIONS
        ]
    )


def support_role_remove(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.using(schema_editor.connection.alias).filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("players", "0001_initial"),
        ("devices", "0004_outbox_outlives_students"),
        ("wallets", "0005_deadletter_resolution_reason"),
    ]

    operations = [migrations.RunPython(support_role_ensure, support_role_remove)]
