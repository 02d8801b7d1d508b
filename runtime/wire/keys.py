"""CURVE keys (ZeroMQ's own authentication and encryption), ironhouse style.

The runtime has a server key pair; each peer has a client key pair; a peer may attach only if its
public key is in the authorized directory. Files are ZeroMQ certificates (``zmq.auth`` format, as
czmq's zcert writes them): ``<name>.key`` holds a public key, ``<name>.key_secret`` both keys.

A keys directory holds::

    server.key            the runtime's public key: give it to every peer
    server.key_secret     the runtime's secret key (mode 0600)
    authorized/<name>.key one public key per peer allowed to attach; read at every new connection,
                          so adding or removing a file takes effect without a restart
    roles/<name>.key      one public key per remote role (a teacher on another host) allowed onto the
                          internal endpoints, read the same way; the runtime's own roles use its pair
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import zmq
import zmq.auth
from zmq.utils import z85

from runtime.errors import ConfigError

SERVER = "server"
AUTHORIZED = "authorized"
ROLES = "roles"
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"


def default_keys_dir(environ: os._Environ[str] | dict[str, str] = os.environ) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "agentrt" / "keys"


def _read(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise ConfigError(f"CURVE key file {path} does not exist")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"CURVE key file {path}: {exc}") from None
    if secret and secret_key is None:
        raise ConfigError(f"CURVE key file {path} holds no secret key (expected a {SECRET_SUFFIX} file)")
    return public, secret_key


@dataclass(frozen=True)
class ClientKeys:
    """What a peer needs to attach to a CURVE endpoint: the server's public key and its own pair (z85)."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def from_files(cls, server_key: str | os.PathLike[str], client_key: str | os.PathLike[str]) -> ClientKeys:
        """``server_key``: the runtime's ``server.key``; ``client_key``: the peer's ``.key_secret``."""
        server_public, _ = _read(Path(server_key), secret=False)
        public, secret = _read(Path(client_key), secret=True)
        assert secret is not None
        return cls(server_public, public, secret)

    @classmethod
    def own(cls, store: KeyStore) -> ClientKeys:
        """The runtime's roles on its own host present the runtime's pair to each other."""
        return cls(store.server_public(), store.server_public(), store.server_secret())

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        """Make ``sock`` a CURVE client of the server (before it connects)."""
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


class KeyStore:
    """The runtime's keys directory (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.authorized_dir = self.directory / AUTHORIZED
        self.roles_dir = self.directory / ROLES

    def folder(self, role: bool) -> Path:
        """Where authorized keys are: ``roles/`` for remote roles, ``authorized/`` for peers."""
        return self.roles_dir if role else self.authorized_dir

    def generate_server(self) -> Path:
        """Create the server key pair unless it exists; the public key file's path."""
        public = self.directory / (SERVER + PUBLIC_SUFFIX)
        if not public.exists():
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.authorized_dir.mkdir(exist_ok=True, mode=0o700)
            zmq.auth.create_certificates(self.directory, SERVER)
            os.chmod(self.directory / (SERVER + SECRET_SUFFIX), 0o600)
        return public

    def server_secret(self) -> bytes:
        path = self.directory / (SERVER + SECRET_SUFFIX)
        if not path.exists():
            raise ConfigError(f"no CURVE server key in {self.directory}; create one with: agentrt keys generate")
        secret = _read(path, secret=True)[1]
        assert secret is not None
        return secret

    def server_public(self) -> bytes:
        self.server_secret()  # the same clear error when the pair is missing
        return _read(self.directory / (SERVER + SECRET_SUFFIX), secret=True)[0]

    def authorize(self, public_key_file: str | os.PathLike[str], name: str, role: bool = False) -> Path:
        """Allow the peer (``role``: the remote role) whose public key is in ``public_key_file``
        (a ``.key`` or ``.key_secret``)."""
        _check_name(name)
        public, _ = _read(Path(public_key_file), secret=False)
        folder = self.folder(role)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = folder / (name + PUBLIC_SUFFIX)
        staging = folder / f".{name}.tmp"
        # Only the public key is written: a secret key never lands in the authorized directory.
        staging.write_text(f'curve\n    public-key = "{public.decode()}"\n')
        staging.replace(target)
        return target

    def revoke(self, name: str, role: bool = False) -> None:
        _check_name(name)
        path = self.folder(role) / (name + PUBLIC_SUFFIX)
        if not path.exists():
            raise ConfigError(f"no authorized key named {name!r} in {self.folder(role)}")
        path.unlink()

    def authorized(self, role: bool = False) -> dict[str, bytes]:
        """Name -> public key (z85) of every authorized peer (``role``: remote role); unreadable
        files are skipped."""
        keys: dict[str, bytes] = {}
        if self.folder(role).is_dir():
            for path in sorted(self.folder(role).glob("*" + PUBLIC_SUFFIX)):
                try:
                    keys[path.name.removesuffix(PUBLIC_SUFFIX)] = zmq.auth.load_certificate(path)[0]
                except (OSError, ValueError):
                    continue
        return keys

    def callback(self, domain: str, key: bytes) -> bool:
        """The ZAP handler's question, for every new connection: is ``key`` (z85) authorized now?"""
        return key in self.authorized().values()


class RoleKeys:
    """The ZAP handler's question on internal endpoints: the runtime's own key (its roles on this
    host) or a remote role's key in ``roles/``, read at each new connection."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self.own = store.server_public()

    def callback(self, domain: str, key: bytes) -> bool:
        return key == self.own or key in self.store.authorized(role=True).values()


def generate_client(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """A new client key pair ``<name>.key`` and ``<name>.key_secret`` in ``directory``; never over
    an existing one, which a runtime may have authorized: the peer holding it would be locked out."""
    _check_name(name)
    for existing in (Path(directory) / (name + suffix) for suffix in (PUBLIC_SUFFIX, SECRET_SUFFIX)):
        if existing.exists():
            raise ConfigError(f"{existing} exists; choose another name, or remove the pair to replace it")
    Path(directory).mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(directory, name)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)


def _check_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise ConfigError(f"key name {name!r}: use letters, digits, '-', '_' and '.' only")


def fingerprint(public: bytes) -> str:
    """A short, stable way to tell keys apart in listings and logs (never the secret)."""
    return z85.decode(public)[:6].hex()


def is_loopback(endpoint: str) -> bool:
    """True for ipc/inproc endpoints and TCP on a loopback address (or localhost)."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a wildcard (*), an interface name or a host name: reachable from elsewhere
