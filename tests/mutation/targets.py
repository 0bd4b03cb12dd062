"""What the mutation run changes, and which tests must notice (SQLite only: the same checks run
on the other two databases in the suite). Paths are from the repository root: when the code
moves, change `file` here and nothing else (done once: dmd/services became dmd/queries and
dmd/usecases; the login and the token lookup moved from dmd/auth/flows.py and dmd/middleware.py
to dmd/usecases/auth.py).

`skip` lists mutants that cannot change behaviour (equivalent mutants), each with the reason;
they are neither run nor counted.
"""

from __future__ import annotations

from tests.mutation.run import Target

SQLITE = ["-k", "not postgresql and not mysql"]

TARGETS = [
    Target(
        name="throttle",
        file="dmd/auth/throttle.py",
        functions=["*"],
        tests=["tests/api/test_throttle.py", "tests/api/test_auth.py", *SQLITE],
    ),
    Target(
        name="login",
        file="dmd/usecases/auth.py",
        functions=["login"],
        tests=["tests/api/test_auth.py", "tests/api/test_throttle.py", *SQLITE],
        equivalent={
            "login | 254 -> 255 | user.id if user else None, email=email[:254])":
                "the API and the login form take emails of at most 254 characters",
        },
    ),
    Target(
        name="quota",
        file="dmd/queries/instances.py",
        functions=["gpu_keys", "node_usage", "free_on", "_fits", "_visible_nodes_clause", "usable_nodes",
                   "image_usable", "_check_quotas", "create", "get_visible", "list_visible"],
        tests=["tests/instances/test_quota_units.py", "tests/instances/test_gpus_and_reconcile.py", *SQLITE],
        lock_tests=["tests/instances/test_gpus_and_reconcile.py", "-k", "parallel and not sqlite"],
        equivalent={
            "_fits | Gt -> GtE | if cpus is not None and f.cpus is not None and cpus > f.cpus + 1e-9:":
                "differs only when the request is exactly 1e-9 CPUs above what is free",
            "create | .where(...) dropped | "
            "await conn.execute(sa.select(nodes.c.id).where(nodes.c.id == node.id).with_for_update())":
                "locks every node's row instead of the chosen one's: coarser, still correct",
            "image_usable | 1 -> 2 | return (await conn.execute(q.limit(1))).first() is not None":
                "first() of one row or of two is the same row",
            'create | raise dropped | raise Conflict(f"you already have an instance named {req.name!r}", '
            'code="name_taken")':
                "the unique (owner, name) index refuses the insert with the same Conflict",
            'create | raise dropped | raise Conflict(f"you already have an instance named {req.name!r}", '
            'code="name_taken") from None':
                "unreachable: the owner's row lock orders creations, so the check above sees every name",
        },
    ),
    Target(
        name="ledger",
        file="dmd/queries/port_maps.py",
        functions=["pools_of", "in_pool", "busy_ports", "set_busy_ports", "get_visible", "list_visible",
                   "allocate", "_pick", "_insert"],
        tests=["tests/portmaps/test_ledger.py", "tests/portmaps/test_ledger_edges.py",
               "tests/portmaps/test_visibility.py", *SQLITE],
        lock_tests=["tests/portmaps/test_ledger.py", "-k", "parallel and not sqlite"],
        equivalent={
            "allocate | .where(...) dropped | "
            "await conn.execute(sa.select(instances.c.id).where(instances.c.id == inst.id).with_for_update())":
                "locks every instance's row instead of this one's: coarser, still correct",
            "_pick | Sub -> Add | total = sum(b - a + 1 for a, b in ranges)":
                "a larger total only makes some random draws miss the pool; the walk of the pool after "
                "them finds the same free ports",
            "_pick | 1 -> 2 | total = sum(b - a + 1 for a, b in ranges)":
                "as above",
            "_pick | 32 -> 33 | for _ in range(32):":
                "one more random draw before the walk of the pool",
        },
    ),
    Target(
        name="node-access",
        file="dmd/queries/nodes.py",
        functions=["trusted_clause", "provided_clause", "usable_clause", "get_visible", "get_manageable",
                   "list_visible", "_check_node_limit", "join", "accept", "leave", "find_share_target",
                   "set_public"],
        tests=["tests/nodes/test_visibility.py", "tests/nodes/test_nodes_api.py", "tests/nodes/test_shares.py",
               *SQLITE],
        lock_tests=["tests/nodes/test_nodes_api.py", "-k", "(node_limit or parallel_joins) and not sqlite"],
        equivalent={
            "join | LtE -> Lt | if node.join_expires_at is None or node.join_expires_at <= utcnow():":
                "differs only in the microsecond a join token expires",
        },
    ),
    Target(
        name="image-access",
        file="dmd/queries/images.py",
        functions=["_visible", "list_on_node", "get_visible"],
        tests=["tests/images/test_visibility.py", *SQLITE],
    ),
    Target(
        name="tokens",
        file="dmd/queries/tokens.py",
        functions=["get", "list_for", "revoke", "lookup"],
        tests=["tests/storage/test_tokens.py", "tests/api/test_tokens.py", "tests/storage/test_storage.py", *SQLITE],
        equivalent={
            "lookup | LtE -> Lt | if user.disabled or (tok.expires_at is not None and tok.expires_at <= utcnow()):":
                "differs only in the microsecond a token expires",
        },
    ),
    Target(
        name="identity",
        file="dmd/middleware.py",
        functions=["_session_identity", "identity_middleware"],
        tests=["tests/api/test_identity.py", "tests/api/test_authorization.py", "tests/api/test_auth.py", "tests/api",
               "tests/pages/test_auth_pages.py", "tests/sessions/test_session_stores.py",
               "-k", "not postgresql and not mysql and not restart"],
        equivalent={
            "identity_middleware | condition negated | if log.isEnabledFor(logging.DEBUG):":
                "the debug line of each request: logging only",
            'identity_middleware | call dropped | log.debug("%s %s -> %s in %.1f ms", request.method, '
            'request.path, resp.status,': "logging only",
            "identity_middleware | Sub -> Add | (time.monotonic() - started) * 1000)": "logging only",
            "identity_middleware | 1000 -> 1001 | (time.monotonic() - started) * 1000)": "logging only",
        },
    ),
    Target(
        name="token-identity",
        file="dmd/usecases/auth.py",
        functions=["token_identity", "session_user"],
        tests=["tests/api/test_identity.py", "tests/api/test_authorization.py", "tests/api/test_auth.py",
               "tests/pages/test_auth_pages.py", "tests/sessions/test_session_stores.py",
               "-k", "not postgresql and not mysql and not restart"],
        equivalent={
            "token_identity | Gt -> GtE | "
            "if tok.last_used_at is None or (now - tok.last_used_at).total_seconds() > LAST_USED_EVERY:":
                "differs only when the last use was exactly LAST_USED_EVERY seconds ago",
        },
    ),
    Target(
        name="routes",
        file="dmd/api/registry.py",
        functions=["_wrap", "Ctx.path_int"],
        tests=["tests/api/test_authorization.py", "tests/api", *SQLITE],
        routes=True,
        equivalent={
            "_wrap | and -> or | if result is None and route.status == 204:":
                "every route that returns None is declared 204, and the one 204 route that returns "
                "something (logout) returns its own response, passed on above this line",
        },
    ),
]
