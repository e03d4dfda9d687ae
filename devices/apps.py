from django.apps import AppConfig


class DevicesConfig(AppConfig):
    name = "devices"
    verbose_name = "Devices and sessions"

    def ready(self) -> None:
        from core import hotstate
        from devices import receivers, schema  # noqa: F401  (connect signals, register schema extensions)
        from devices.servicekeys import on_redis_recovery

        # Statement 16: keys revoked while Redis was away are buried as soon as it answers again.
        hotstate.on_recovery(on_redis_recovery)
