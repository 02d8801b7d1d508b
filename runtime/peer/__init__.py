"""The peer SDK: what a robot or simulator uses to attach (``sdk``), its edge mode, where the peer
runs the student itself (``edge``), and Gymnasium peers (``gym``).

Needs only pyzmq, msgpack and numpy (plus gymnasium for ``gym``): never torch or pluggy.
"""

from runtime.peer.sdk import Action, Peer, PeerError, results
from runtime.wire.keys import ClientKeys

__all__ = ["Action", "ClientKeys", "Peer", "PeerError", "results"]
