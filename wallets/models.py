# The rewards engine (PlayerWallet, the XP ledger) is built by the rewards issue.
