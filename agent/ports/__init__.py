"""DM's port forwarding on the node: host ports from the node's pools -> container ports.

``manager.PortForwarding`` answers dmd's ``ports.apply``; it forwards with kernel rules
(``kernel.KernelForwarder``, iptables) or, where those cannot be used, an asyncio relay
(``proxy.ProxyForwarder``). ``pools`` parses the configured pools and reads which host ports
host programs listen on. Nothing is imported here, so ``agent.config`` can use ``pools``
without loading the rest.
"""
