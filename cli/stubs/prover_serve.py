from cli.common import not_yet

register = not_yet("prover serve", "nodes issue")
