"""gunicorn settings for the API (`make run` uses them; so can production, overriding ``--bind``).

Sync workers, 2 by default: on two cores they beat gthread, and gevent gave a long unfair tail
(DESIGN, "Numbers").
"""

import os

bind = f"127.0.0.1:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "sync"
# Import Django once in the master; the workers fork from it ready to serve.
preload_app = True
timeout = 30
graceful_timeout = 10
accesslog = "-"
errorlog = "-"
# The control socket defaults to one path per user ($HOME/.gunicorn/gunicorn.ctl), which two
# instances on one machine (a test beside `make run`) would fight over; nothing here uses it.
control_socket_disable = True


def post_fork(server: object, worker: object) -> None:
    # Threads do not survive a fork: each worker starts its own outbox reconciler.
    from memora import reconciler

    reconciler.ensure_started()


def child_exit(server: object, worker: object) -> None:
    # A dead worker's live gauges leave the multiprocess metrics (its counters stay counted).
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
