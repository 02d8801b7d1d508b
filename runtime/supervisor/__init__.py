"""Supervision: the daemon (``daemon``), how it starts role processes (``role_processes``), its control
socket's client (``control``) and a daemon run as a child process (``launch``)."""
