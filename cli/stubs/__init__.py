"""Placeholder subcommands for work that later issues add; each exits 3 ("not yet")."""
