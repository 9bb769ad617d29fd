"""`cogbox agent`: the process that owns a node's kernels, and the manager's client of it.

The manager (`cogbox serve`: API, auth, database) reaches kernels only through the `Agent`
protocol (cogbox.service.agent). `LocalAgent` (local.py) implements it in-process; `AgentServer`
(server.py) puts a LocalAgent behind an authenticated WebSocket channel (channel.py), and
`RemoteAgent` (remote.py) implements the protocol over that channel, so kernels outlive the
manager: a `kill -9` of `cogbox serve` leaves the agent and its kernels running, and the next
`cogbox serve` re-attaches (supervisor.py finds or starts the node's agent).
"""
