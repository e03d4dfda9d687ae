"""The Support group: what support staff need in the admin, and nothing else.

Students, sessions and the audit are read; authorized devices are read and changed (the change
permission unlocks revoke_devices, allow_devices and "End sessions"). Not service API keys, not
users. Permissions are created here first, so this works on a fresh database, where Django would
otherwise create them only after all migrations ran.
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
]


def create_support_group(apps, schema_editor):
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
    permissions = [
        Permission.objects.using(using).get(content_type__app_label=app_label, codename=codename)
        for app_label, codename in PERMISSIONS
    ]
    group.permissions.set(permissions)


def delete_support_group(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.using(schema_editor.connection.alias).filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("players", "0001_initial"),
        ("devices", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(create_support_group, delete_support_group),
    ]
