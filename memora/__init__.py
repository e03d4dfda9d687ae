"""The composition app: what spans players, devices and wallets — probes, the outbox reconciler,
the student overview admin, the cross-app commands (`rebuild_cache`, `seed_demo`) and the tests
that need more than one app."""
