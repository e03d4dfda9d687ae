from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The kernel: no models; registers the service's own `check --deploy` checks."""

    name = "core"
    verbose_name = "Memora kernel"

    def ready(self) -> None:
        from core import checks  # noqa: F401
