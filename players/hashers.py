from django.contrib.auth.hashers import Argon2PasswordHasher


class MemoraArgon2PasswordHasher(Argon2PasswordHasher):
    """Argon2id at OWASP's parameters (19 MiB, t=2, p=1): about 23 ms per hash on two cores,
    where Django's defaults cost about 130 ms per login."""

    algorithm = "argon2"
    time_cost = 2
    memory_cost = 19 * 1024
    parallelism = 1
