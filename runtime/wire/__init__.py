"""The wire: message kinds and their encoding (``protocol``), spaces on the wire (``spaces``) and the
one place ZeroMQ sockets are made (``transport``). Depends on nothing else in agentrt."""
