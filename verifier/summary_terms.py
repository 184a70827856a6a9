"""The words of the auditors' summaries (verifier.ledger_index), in a module that imports nothing, so
that the commands can offer them as choices without loading the ledger code."""

JOB_STATUSES = ("running", "done", "failed")  # done: every commitment is on the ledger; failed: a job.fail counts
VERDICTS = ("clean", "cheated", "incomplete", "unaudited")  # from the counted auditors' verdict entries
PARTY_STATUSES = ("clean", "cheated", "defaulted", "not opened", "unresolved", "incomplete", "unaudited")
