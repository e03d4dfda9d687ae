import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "memora_project.settings")

app = Celery("memora")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The beat schedule is CELERY_BEAT_SCHEDULE in the settings, built from the interval settings.


@worker_process_init.connect
def _start_reconciler(**kwargs: object) -> None:
    # Each pool process is forked from the worker and has no threads: start its outbox reconciler.
    from memora import reconciler

    reconciler.ensure_started()
