"""The use-case tier: what the API handlers and the pages call, one function per thing a user does.

Each use case takes dmd's parts (`dmd.core.Dm`) first, opens its own transaction(s) (or uses
`Database.run` where a deadlock victim must run again), checks who may act, records the audit
entry in the same transaction as the change, and then kicks the reconciler or asks the agent.
The queries they run are in dmd.queries. Handlers never open a transaction themselves.
"""
