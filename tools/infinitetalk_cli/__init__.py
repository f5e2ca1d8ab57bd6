"""The ``infinitetalk`` command: drop jobs, watch them, fetch their videos and read the ledger."""
