from celery import shared_task

from devices import services


@shared_task(ignore_result=True)
def persist_last_seen() -> int:
    """Write the last-seen times Redis marked as due (at most once a minute per session)."""
    return services.last_seen_persist()
