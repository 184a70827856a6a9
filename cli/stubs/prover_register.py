from cli.common import not_yet

register = not_yet("prover register", "nodes issue")
