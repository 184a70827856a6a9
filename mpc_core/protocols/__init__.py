"""Protocols over raw party-axis share tensors (P, *shape) of int64 ring elements.

Each function is a numbered recipe with the paper it follows; `SharedTensor`
(mpc_core.tensor) is the user-facing sugar on top.
"""
