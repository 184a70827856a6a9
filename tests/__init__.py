"""shardproof test suite (a package so that tests/ledger never shadows the ledger package)."""
