from cli.common import not_yet

register = not_yet("shardproof demo", "mpc_core issue")
