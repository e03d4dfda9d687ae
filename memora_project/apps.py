from django.apps import AppConfig


class MemoraProjectConfig(AppConfig):
    """The composition part: what spans the apps (URL map, beat schedule, cross-app commands)."""

    name = "memora_project"
    verbose_name = "Memora"

    def ready(self) -> None:
        # Registers the service's own `check --deploy` checks.
        from memora_project import checks  # noqa: F401
