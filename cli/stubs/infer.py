from cli.common import not_yet

register = not_yet("shardproof infer", "private-generation issue")
