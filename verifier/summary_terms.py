"""The words of the auditors' summaries (verifier.ledger_index), in a module that imports nothing, so
that the commands can offer them as choices without loading the ledger code."""

JOB_STATUSES = ("running", "done", "failed")  # done: every commitment is on the ledger; failed: a job.fail counts
VERDICTS = ("clean", "cheated", "incomplete", "unaudited")  # from the counted auditors' verdict entries
PARTY_STATUSES = ("clean", "cheated", "defaulted", "unresponsive", "not opened", "unresolved", "incomplete",
                  "unaudited")

# How verifier.ledger_audit words, in a verdict's reason ("party P (node): <why>; ..."), a share index
# whose node did not answer without being provably at fault (the verdict marks it `unresponsive`, not
# accused): it posted no job root, or a peer's job root disputes its broadcast receipt. A share index
# marked unresponsive because the dealer withheld its release is not the node's doing: other wording.
NO_JOB_ROOT = "no job root"
DISPUTED_RECEIPT = "no valid broadcast receipt according to party"
UNRESPONSIVE_REASONS = (NO_JOB_ROOT, DISPUTED_RECEIPT)
