"""Saving a user ends their sessions when the password changed or the account was deactivated,
whatever the path (admin, ``changepassword``, shell); a profile's timezone change refreshes the
cached copy; deleting a student drops it."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from devices import services
from devices.models import EndReason
from players.models import PlayerProfile
from players.signals import profile_changed

User = get_user_model()


@receiver(pre_save, sender=User, dispatch_uid="devices.user_pre_save")
def remember_credentials(sender: Any, instance: Any, update_fields: Any = None, **kwargs: Any) -> None:
    if instance.pk is None:
        return
    if update_fields is not None and not ({"password", "is_active"} & set(update_fields)):
        return
    previous = sender.objects.filter(pk=instance.pk).values("password", "is_active").first()
    instance._memora_previous = previous


@receiver(post_save, sender=User, dispatch_uid="devices.user_post_save")
def end_sessions_on_credential_change(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    previous = getattr(instance, "_memora_previous", None)
    instance._memora_previous = None
    if created or previous is None:
        return
    player_id = PlayerProfile.objects.filter(user_id=instance.pk).values_list("pk", flat=True).first()
    if player_id is None:
        return
    if previous["is_active"] and not instance.is_active:
        services.session_end_all(player_id=player_id, reason=EndReason.DEACTIVATED)
    elif previous["password"] != instance.password:
        services.session_end_all(player_id=player_id, reason=EndReason.PASSWORD_CHANGED)


@receiver(post_delete, sender=PlayerProfile, dispatch_uid="devices.profile_deleted")
def forget_deleted_player(sender: Any, instance: PlayerProfile, **kwargs: Any) -> None:
    services.player_deleted(player_id=instance.pk)


@receiver(profile_changed, dispatch_uid="devices.profile_changed")
def refresh_cached_profile(sender: Any, player_id: int, **kwargs: Any) -> None:
    services.player_profile_changed(player_id=player_id)
