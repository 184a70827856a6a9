from cli.common import not_yet

register = not_yet("verify ledger-check", "ledger issue")
