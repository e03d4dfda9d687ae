from celery import shared_task
from django.db import OperationalError

from wallets import services


@shared_task(bind=True, ignore_result=True, max_retries=8)
def flush_wallets(self) -> int:  # type: ignore[no-untyped-def]
    """The beat flush. The database away: retry with backoff; nothing is lost meanwhile."""
    try:
        return services.wallet_flush(trigger="beat").events
    except OperationalError as exc:
        raise self.retry(exc=exc, countdown=min(300, 5 * 2**self.request.retries)) from exc
