from celery import shared_task

from memora import reconciler


@shared_task(ignore_result=True)
def reconcile_outbox() -> int:
    return reconciler.reconcile_outbox()
