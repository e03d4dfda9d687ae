from django.apps import AppConfig


class MemoraConfig(AppConfig):
    """The composition part: probes, the reconciler, the student overview, cross-app commands."""

    name = "memora"
    verbose_name = "Memora"
