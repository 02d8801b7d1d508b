"""The peer SDK's waiting, against a scripted runtime on real ZeroMQ: it loses a whole batch of
observations on purpose, as a real runtime does only when a role restarts at that moment."""

from __future__ import annotations

import threading

import numpy as np
import zmq

from runtime.peer import Peer, results
from runtime.wire import protocol

PEERS = 3
SPACES = {
    "observation_space": {"type": "box", "shape": [2], "dtype": "float32", "low": -1.0, "high": 1.0},
    "action_space": {"type": "discrete", "n": 2},
}


def runtime_that_loses_the_first_batch(router: zmq.Socket, stop: threading.Event) -> None:
    """Welcome every hello; drop every peer's first observation, and answer only once every peer
    has sent it again, so a peer that resends only while it alone is awaited is never answered."""
    seen: dict[bytes, list[protocol.Message]] = {}
    while not stop.is_set():
        if not router.poll(50):
            continue
        route, data = router.recv_multipart()
        message = protocol.decode(data)
        if message.kind == "hello":
            welcome = protocol.encode(
                "welcome",
                peer_id=route.hex(),
                **SPACES,
                student_version=1,
                max_message_bytes=protocol.DEFAULT_MAX_MESSAGE_BYTES,
                peer_timeout_ms=60_000,
            )
            router.send_multipart([route, welcome])
        elif message.kind == "observation":
            seen.setdefault(route, []).append(message)
            if len(seen) == PEERS and all(len(copies) >= 2 for copies in seen.values()):
                for each, copies in seen.items():
                    action = np.asarray(copies[-1]["seq"] % 2, dtype=np.int64)
                    reply = protocol.encode(
                        "action", seq=copies[-1]["seq"], action=action, student_version=1, decided_by="student"
                    )
                    router.send_multipart([each, reply])
                seen.clear()


def test_peers_awaited_together_each_resend_a_lost_batch_while_the_others_are_awaited():
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()
    runtime = threading.Thread(target=runtime_that_loses_the_first_batch, args=(router, stop))
    runtime.start()
    # A large reconnect_after: the resends alone must get the answers (a reconnect would too).
    peers = [
        Peer(f"tcp://127.0.0.1:{port}", SPACES["observation_space"], SPACES["action_space"], reconnect_after=1000)
        for _ in range(PEERS)
    ]
    try:
        for peer in peers:
            peer.connect(wait_s=60)
        seqs = [peer.submit(np.zeros(2, dtype=np.float32)) for peer in peers]
        answers = results(peers)
        assert [answer.seq for answer in answers] == seqs
        assert all(peer.resends >= 1 for peer in peers)
        assert all(peer.reconnects == 0 for peer in peers)
    finally:
        stop.set()
        runtime.join(timeout=30)
        for peer in peers:
            peer.close()
        router.close()
        context.term()
