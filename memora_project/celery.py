import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "memora_project.settings")

app = Celery("memora")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The beat schedule, declared in one place.
app.conf.beat_schedule = {
    "persist-last-seen": {"task": "devices.tasks.persist_last_seen", "schedule": 60.0},
    "flush-wallets": {
        "task": "wallets.tasks.flush_wallets",
        "schedule": float(os.environ.get("MEMORA_FLUSH_INTERVAL", "600")),
    },
    "reconcile-outbox": {"task": "memora_project.tasks.reconcile_outbox", "schedule": 30.0},
}


@worker_process_init.connect
def _start_reconciler(**kwargs: object) -> None:
    # Each pool process is forked from the worker and has no threads: start its outbox reconciler.
    from memora_project import reconciler

    reconciler.ensure_started()
