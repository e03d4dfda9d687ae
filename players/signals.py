from django.dispatch import Signal

# Sent inside the transaction that changed a profile field the hot state mirrors (the timezone),
# so that a listener can record its own outbox row atomically with the change. kwargs: player_id.
profile_changed = Signal()
