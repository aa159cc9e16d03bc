"""The agent channel: linupdate's reposerver agents keep a websocket open on `/ws`, and operators'
requests to hosts (send your information, your packages, update them, reload your profile) go over it.

protocol.py builds and reads every frame; channel.py is the `/ws` handler; hub.py holds one server
process's sockets (one per host) and hears the other processes' notices; sessions.py records in
PostgreSQL which process holds which host's socket.
"""
