from cli.common import not_yet

register = not_yet("prover keygen", "nodes issue")
