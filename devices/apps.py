from django.apps import AppConfig


class DevicesConfig(AppConfig):
    name = "devices"
    verbose_name = "Devices and sessions"

    def ready(self) -> None:
        from devices import receivers, schema  # noqa: F401  (connect signals, register schema extensions)
