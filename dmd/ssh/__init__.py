"""The SSH gateway (`ssh_listen`): `ssh -J alice@dm:2222 root@train` reaches alice's instance
`train` over its node's agent link. A handler like the API and the pages: it calls the use cases
(dmd.usecases.gateway) and never reaches storage or dmd's other parts itself.

    server.py   the asyncssh server: logins (keys from DM, the login throttle, the audit),
                what a logged-in client may open, the help of a plain session
    forward.py  one direct-tcpip channel pumped to and from a stream on the agent link
    hostkey.py  the ed25519 host key, made once in the data dir
"""

from dmd.ssh.server import SshGateway

__all__ = ["SshGateway"]
