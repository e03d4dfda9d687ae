import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "memora_project.settings")

app = Celery("memora")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The beat schedule, declared in one place.
app.conf.beat_schedule = {
    "persist-last-seen": {"task": "devices.tasks.persist_last_seen", "schedule": 60.0},
    "reconcile-outbox": {"task": "memora_project.tasks.reconcile_outbox", "schedule": 30.0},
}
