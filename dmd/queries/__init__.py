"""The query tier: reads and writes on an `AsyncConnection` that the caller's transaction holds.

Functions here never open, commit or roll back a transaction, never talk to an agent and never
record who acted: that is the use cases' work (dmd.usecases). They raise the ApiError family
for what the data rules out (not found, taken, over a quota). They import neither the use
cases nor the API or the pages.
"""
