"""An SSH session to a device, through paramiko, with OpenSSH's host-key rules and errors that say what to do.

- Host keys are checked against known_hosts (``~/.ssh/known_hosts`` and ``/etc/ssh/ssh_known_hosts``, or the file
  given). An unknown host is refused unless ``accept_new_host_key`` (OpenSSH's ``StrictHostKeyChecking=accept-new``:
  the key is then appended to known_hosts); a key that differs from the recorded one is always refused.
- Authentication by key: the identity file given, else the SSH agent and ``~/.ssh/id_*``.
- Every failure is a :class:`~edgevit.errors.RemoteError` (:class:`~edgevit.errors.HostKeyError` for host keys)
  whose message names the host, what failed and the command that fixes it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from .._optional import require
from ..errors import ConfigError, HostKeyError, RemoteError

log = logging.getLogger(__name__)

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
SYSTEM_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")


@dataclass(frozen=True)
class RemoteTarget:
    """``user@host[:port]`` (also ``[v6addr]:port``); ``user`` defaults to the local user name."""

    host: str
    user: str | None = None
    port: int = 22

    @classmethod
    def parse(cls, spec: str) -> RemoteTarget:
        """Parse ``user@host``, ``user@host:2222``, ``host``, ``user@[::1]:2222``; raises :class:`ConfigError`."""
        text = (spec or "").strip()
        text = text.removeprefix("ssh://")
        user, _, hostport = text.rpartition("@")
        m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:\[\]\s]+)(?::(\d+))?", hostport)
        if not hostport or not m:
            raise ConfigError(f"--remote {spec!r}: expected user@host or user@host:port (e.g. jetson@orin.local, "
                              f"jetson@192.168.1.20:2222)")
        host = m[1] or m[3]
        port = int(m[2] or m[4] or 22)
        if not 0 < port < 65536:
            raise ConfigError(f"--remote {spec!r}: port {port} is out of range 1-65535")
        return cls(host=host, user=user or None, port=port)

    @property
    def known_hosts_name(self) -> str:
        """The name OpenSSH files the host under in known_hosts (``[host]:port`` for a port other than 22)."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user + '@' if self.user else ''}{host}{'' if self.port == 22 else f':{self.port}'}"


def fingerprint(key) -> str:
    """OpenSSH's SHA256 fingerprint of a paramiko key (``SHA256:base64`` without padding)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass
class CommandResult:
    """Exit status and output of one remote command (text decoded as UTF-8 with replacement)."""

    command: str
    rc: int
    stdout: str
    stderr: str
    seconds: float

    def check(self, what: str) -> CommandResult:
        """Raise :class:`RemoteError` naming ``what`` when the command failed."""
        if self.rc != 0:
            tail = (self.stderr.strip() or self.stdout.strip())[-1500:]
            raise RemoteError(f"{what} failed on the device (exit {self.rc}): {tail or '(no output)'}")
        return self


class SSHSession:
    """A connected SSH client: :meth:`run` commands, :meth:`put`/:meth:`get` files over SFTP, :meth:`close`.

    ``known_hosts``: the file to check host keys against (and to append to with ``accept_new_host_key``); default
    ``~/.ssh/known_hosts`` plus the system file. ``identity``: a private key file (default: the agent and
    ``~/.ssh/id_*``). ``timeout``: seconds for the TCP connection, the banner and authentication.
    Raises :class:`RemoteError` / :class:`HostKeyError` (see the module docstring).
    """

    def __init__(self, target: RemoteTarget | str, *, identity: str | Path | None = None,
                 known_hosts: str | Path | None = None, accept_new_host_key: bool = False,
                 timeout: float = 10.0) -> None:
        self.target = RemoteTarget.parse(target) if isinstance(target, str) else target
        self.identity = Path(identity).expanduser() if identity else None
        self.known_hosts = Path(known_hosts).expanduser() if known_hosts else DEFAULT_KNOWN_HOSTS.expanduser()
        self.accept_new_host_key = accept_new_host_key
        self.host_key_added: str | None = None  # fingerprint of a key accepted on first use
        if self.identity is not None and not self.identity.is_file():
            raise ConfigError(f"--identity {self.identity}: no such file (give the private key that the device's "
                              f"~/.ssh/authorized_keys accepts)")
        self._client = self._connect(timeout)
        self._sftp = None

    # ------------------------------------------------------------------------------------------ connection
    def _connect(self, timeout: float):
        paramiko = require("paramiko", extra="remote", feature="Profiling on a remote device over SSH")
        t = self.target
        client = paramiko.SSHClient()
        if self.known_hosts.is_file():
            try:
                client.load_host_keys(str(self.known_hosts))
            except (OSError, paramiko.SSHException) as exc:
                raise HostKeyError(f"cannot read known_hosts {self.known_hosts}: {exc}") from exc
        if self.known_hosts == DEFAULT_KNOWN_HOSTS.expanduser() and SYSTEM_KNOWN_HOSTS.is_file():
            try:
                client.load_system_host_keys(str(SYSTEM_KNOWN_HOSTS))
            except (OSError, paramiko.SSHException) as exc:
                log.warning("ignoring unreadable %s: %s", SYSTEM_KNOWN_HOSTS, exc)
        client.set_missing_host_key_policy(_HostKeyPolicy(self))
        user = t.user or _local_user()
        # paramiko logs each failed handshake as a traceback on its own logger; the errors below say what happened
        quiet = logging.getLogger("paramiko.transport")
        level, quiet.level = quiet.level, logging.CRITICAL
        try:
            client.connect(t.host, port=t.port, username=user,
                           key_filename=str(self.identity) if self.identity else None,
                           allow_agent=self.identity is None, look_for_keys=self.identity is None,
                           timeout=timeout, banner_timeout=timeout, auth_timeout=timeout)
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"HOST KEY MISMATCH for {t.known_hosts_name}: the device presented a {exc.key.get_name()} key "
                f"{fingerprint(exc.key)}, but {self.known_hosts} records {fingerprint(exc.expected_key)}. Someone "
                f"may be intercepting the connection, or the device was re-installed and has a new key. Check the "
                f"key on the device (ssh-keygen -lf /etc/ssh/ssh_host_{_key_file(exc.key)}_key.pub); if it is the "
                f"new one, remove the old entry with: ssh-keygen -R '{t.known_hosts_name}' -f {self.known_hosts}"
            ) from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            how = f"the key {self.identity}" if self.identity else "the SSH agent's keys and ~/.ssh/id_*"
            raise RemoteError(
                f"{user}@{t.host}:{t.port} refused {how} ({exc}). Check the user name, and that the public half of "
                f"the key is in the device's ~/.ssh/authorized_keys (ssh-copy-id "
                f"{'-i ' + str(self.identity) + ' ' if self.identity else ''}-p {t.port} {user}@{t.host}); pass "
                f"--identity FILE for another key"
            ) from exc
        except TimeoutError as exc:
            client.close()
            raise RemoteError(f"cannot reach {t.host}:{t.port}: no answer within {timeout:g} s. Is the device on "
                              f"and on this network, and is sshd listening on port {t.port}?") from exc
        except socket.gaierror as exc:
            client.close()
            raise RemoteError(f"cannot resolve the host name {t.host!r} ({exc}); check the spelling, or use the "
                              f"device's IP address") from exc
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            client.close()
            raise RemoteError(f"cannot reach {t.host}:{t.port}: connection refused. Is sshd running on the device "
                              f"(sudo systemctl start ssh) and listening on port {t.port}?") from exc
        except paramiko.SSHException as exc:
            client.close()
            if "banner" in str(exc).lower():
                raise RemoteError(f"{t.host}:{t.port} answered, but not as an SSH server ({exc}): check the port "
                                  f"(sshd's is usually 22; user@host:PORT)") from exc
            raise RemoteError(f"SSH to {t} failed: {exc}. If the identity file is encrypted, load it into "
                              f"ssh-agent (ssh-add FILE) and leave out --identity") from exc
        except OSError as exc:
            client.close()
            raise RemoteError(f"cannot reach {t.host}:{t.port}: {exc.strerror or exc}") from exc
        finally:
            quiet.setLevel(level)
        return client

    def _accept(self, hostname: str, key) -> None:
        """Called for a host that known_hosts does not list: refuse, or record it (accept-new)."""
        fp = fingerprint(key)
        if not self.accept_new_host_key:
            raise HostKeyError(
                f"{self.target.known_hosts_name} is not in {self.known_hosts}: its {key.get_name()} key is {fp}. "
                f"Compare it with the device's own (ssh-keygen -lf /etc/ssh/ssh_host_{_key_file(key)}_key.pub, run "
                f"on the device), then add it with: ssh-keyscan -p {self.target.port} {self.target.host} >> "
                f"{self.known_hosts} — or pass --accept-new-host-key to trust it on first use")
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with self.known_hosts.open("a") as f:
            f.write(f"{self.target.known_hosts_name} {key.get_name()} {key.get_base64()}\n")
        self.host_key_added = fp
        log.warning("added %s (%s %s) to %s (--accept-new-host-key)", self.target.known_hosts_name, key.get_name(),
                    fp, self.known_hosts)

    # ------------------------------------------------------------------------------------------ commands
    def run(self, command: str, *, timeout: float = 600.0, check: str | None = None) -> CommandResult:
        """Run ``command`` through the device's login shell; wait up to ``timeout`` seconds for it to end.
        ``check``: when given, a failure raises :class:`RemoteError` naming it. Raises :class:`RemoteError` on a
        timeout or a dropped connection."""
        t0 = time.perf_counter()
        try:
            chan = self._client.get_transport().open_session()
            chan.settimeout(timeout)
            chan.exec_command(command)
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout
            while True:
                if chan.recv_ready():
                    out += chan.recv(65536)
                elif chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                elif chan.exit_status_ready():
                    while chan.recv_ready():
                        out += chan.recv(65536)
                    while chan.recv_stderr_ready():
                        err += chan.recv_stderr(65536)
                    break
                elif time.monotonic() > deadline:
                    chan.close()
                    raise RemoteError(f"'{command[:120]}' did not finish on {self.target} within {timeout:g} s")
                else:
                    time.sleep(0.005)
            rc = chan.recv_exit_status()
            chan.close()
        except (OSError, EOFError) as exc:
            raise RemoteError(f"the SSH connection to {self.target} dropped while running '{command[:120]}': "
                              f"{exc}") from exc
        res = CommandResult(command, rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                            time.perf_counter() - t0)
        log.debug("remote %s -> %d in %.2fs", command[:200], rc, res.seconds)
        return res.check(check) if check else res

    def _sftp_client(self):
        if self._sftp is None:
            try:
                self._sftp = self._client.open_sftp()
            except Exception as exc:
                raise RemoteError(f"{self.target} offers no SFTP (needed to copy the model): enable the sftp "
                                  f"subsystem in the device's sshd_config ({exc})") from exc
        return self._sftp

    def put(self, local: str | Path, remote: str) -> None:
        """Copy a local file to ``remote`` (a path on the device)."""
        try:
            self._sftp_client().put(str(local), remote)
        except OSError as exc:
            raise RemoteError(f"copying {local} to {self.target}:{remote} failed: {exc}") from exc

    def get(self, remote: str, local: str | Path) -> None:
        """Copy ``remote`` from the device to a local file."""
        try:
            self._sftp_client().get(remote, str(local))
        except OSError as exc:
            raise RemoteError(f"copying {self.target}:{remote} back failed: {exc}") from exc

    def read_text(self, remote: str) -> str:
        """A device file's text (UTF-8 with replacement)."""
        try:
            with self._sftp_client().open(remote, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError as exc:
            raise RemoteError(f"reading {self.target}:{remote} failed: {exc}") from exc

    def mkdtemp(self, prefix: str = "edgevit-") -> str:
        """A new private directory on the device (``mktemp -d``)."""
        return self.run(f"mktemp -d /tmp/{shlex.quote(prefix)}XXXXXXXX", timeout=30,
                        check="creating a temporary directory").stdout.strip()

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        self._client.close()

    def __enter__(self) -> SSHSession:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _HostKeyPolicy:
    """paramiko's MissingHostKeyPolicy for a host that known_hosts does not list: defer to the session."""

    def __init__(self, session: SSHSession) -> None:
        self._session = session

    def missing_host_key(self, client, hostname, key) -> None:
        self._session._accept(hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)


def _key_file(key) -> str:
    """The key-type part of /etc/ssh/ssh_host_<type>_key.pub for a paramiko key."""
    name = key.get_name()
    return {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa", "rsa-sha2-256": "rsa", "rsa-sha2-512": "rsa"}.get(
        name, "ecdsa" if name.startswith("ecdsa") else name)


def _local_user() -> str:
    import getpass

    return getpass.getuser()
