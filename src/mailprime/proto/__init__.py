"""Sans-IO protocol cores: bytes in, events out; events in, bytes out. No sockets, no clock."""


class ProtocolError(Exception):
    """Base of the protocol cores' errors."""


class LocalProtocolError(ProtocolError):
    """Our own side tried something the protocol forbids in this state (a bug in the caller)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol badly enough that the connection cannot go on."""
