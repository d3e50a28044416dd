"""A real OpenLDAP server (Debian's slapd) on 127.0.0.1 for the LDAP tests and the benchmark.

Its own ``slapd.conf`` and mdb database in a temp dir, no systemd; data goes
in with ``ldapadd``/``ldapmodify`` (``slapadd`` for the benchmark's bulk
load, before it starts). It runs in its own process group and gets SIGKILL
when the test process dies, so a killed run leaves nothing behind; its port
comes from tests/peers.py's ``start_on_free_port`` (a restart keeps it).
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers import (
    PeerDidNotStart,
    die_with_parent,
    free_tcp_port,
    listening,
    start_on_free_port,
    wait_ready,
)

BASE = "dc=example,dc=com"
ROOT_DN = f"cn=admin,{BASE}"
ROOT_PASSWORD = "root-secret"
BIND_DN = f"cn=deskbot,{BASE}"
BIND_PASSWORD = "deskbot-secret"
_subtrees = itertools.count(1)


def _tool(name: str) -> str:
    path = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        raise PeerDidNotStart(f"{name} is not installed: run `make test`, which installs it")
    return path


def own_ca(workdir: Path) -> tuple[Path, Path, Path]:
    """A CA of the test's own and a certificate for 127.0.0.1 it signed: (ca, cert, key)."""
    openssl = _tool("openssl")
    ca, ca_key = workdir / "ca.pem", workdir / "ca.key"
    cert, key, csr = workdir / "server.pem", workdir / "server.key", workdir / "server.csr"
    (workdir / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for line in (
        f"req -x509 -newkey rsa:2048 -nodes -keyout {ca_key} -out {ca} -days 2",
        f"req -newkey rsa:2048 -nodes -keyout {key} -out {csr}",
        f"x509 -req -in {csr} -CA {ca} -CAkey {ca_key} -CAcreateserial -out {cert} -days 2 "
        f"-extfile {workdir / 'san.cnf'}",
    ):
        subject = ["-subj", "/CN=deskbot test CA" if "-x509" in line else "/CN=127.0.0.1"]
        args = line.split() + (subject if line.startswith("req") else [])
        subprocess.run([openssl, *map(str, args)], check=True, capture_output=True)
    return ca, cert, key


class Slapd:
    def __init__(self, workdir: Path, tls: bool = False, size_limit: int | None = None):
        """tls: also ldaps:// on `tls_port` and StartTLS, with a certificate of `ca_file`.

        size_limit: what deskbot's account gets per search, as an AD gives 1,000 at most;
        paged results may go on past it, page by page.
        """
        self.dir = workdir
        self.port = 0  # chosen at the first start; a restart keeps it
        self.tls_port = 0
        self.ca_file: Path | None = None
        tls_lines = ""
        if tls:
            self.ca_file, cert, key = own_ca(workdir)
            tls_lines = (
                f"TLSCACertificateFile {self.ca_file}\n"
                f"TLSCertificateFile {cert}\nTLSCertificateKeyFile {key}\n"
            )
        (workdir / "db").mkdir(parents=True, exist_ok=True)
        limits = ""
        if size_limit is not None:
            limits = (
                f'limits dn.exact="{BIND_DN}" size.soft={size_limit} size.hard={size_limit} '
                "size.prtotal=unlimited\n"
            )
        rootpw = subprocess.run(
            [_tool("slappasswd"), "-s", ROOT_PASSWORD], capture_output=True, text=True, check=True
        ).stdout.strip()
        self.conf = workdir / "slapd.conf"
        self.conf.write_text(
            textwrap.dedent(f"""\
            include /etc/ldap/schema/core.schema
            include /etc/ldap/schema/cosine.schema
            include /etc/ldap/schema/inetorgperson.schema
            include /etc/ldap/schema/nis.schema
            modulepath /usr/lib/ldap
            moduleload back_mdb
            pidfile {workdir}/slapd.pid
            sizelimit unlimited
            @TLS@
            database mdb
            maxsize 1073741824
            suffix "{BASE}"
            rootdn "{ROOT_DN}"
            rootpw {rootpw}
            directory {workdir}/db
            index objectClass eq
            access to attrs=userPassword by anonymous auth by * none
            access to * by users read by * none
            @LIMITS@
            """)
            .replace("@TLS@\n", tls_lines)
            .replace("@LIMITS@\n", limits)
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = (workdir / "slapd.log").open("ab")

    def bulk_load(self, ldif: str) -> None:
        """slapadd, offline: for data sets too large for ldapadd (the benchmark)."""
        path = self.dir / "bulk.ldif"
        path.write_text(ldif)
        subprocess.run(
            [_tool("slapadd"), "-q", "-f", str(self.conf), "-l", str(path)],
            check=True,
            capture_output=True,
        )

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def _log_text(self) -> str:
        return (self.dir / "slapd.log").read_text(errors="replace")

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    def _start(self, port: int) -> subprocess.Popen[bytes]:
        urls = f"ldap://127.0.0.1:{port}/"
        if self.ca_file is not None:
            self.tls_port = self.tls_port or free_tcp_port()
            urls += f" ldaps://127.0.0.1:{self.tls_port}/"
        return subprocess.Popen(
            [_tool("slapd"), "-f", str(self.conf), "-h", urls, "-d", "0"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    def start(self, timeout: float = 15.0) -> Slapd:
        """Start and wait until it listens; PeerDidNotStart (with its log) if it does not."""
        if self.port == 0:
            self.port, self.proc = start_on_free_port(
                self._start, "slapd", why=self._log_text, timeout=timeout
            )
        else:
            self.proc = self._start(self.port)
            wait_ready(self.proc, lambda: listening(self.port), "slapd", timeout, self._log_text)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _ldap(self, tool: str, ldif: str, *flags: str) -> None:
        result = subprocess.run(
            [_tool(tool), "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD, *flags],
            input=textwrap.dedent(ldif),
            capture_output=True,
            text=True,
        )
        if result.returncode:
            raise RuntimeError(f"{tool} failed: {result.stderr.strip()}")

    def add(self, ldif: str) -> None:
        self._ldap("ldapadd", ldif)

    def modify(self, ldif: str) -> None:
        self._ldap("ldapmodify", ldif)

    def delete(self, *dns: str) -> None:
        self._ldap("ldapdelete", "", *dns)

    def seed(self) -> None:
        """The suffix and deskbot's service account (bound as a user, not as the root DN)."""
        self.add(f"""\
            dn: {BASE}
            objectClass: dcObject
            objectClass: organization
            o: Example
            dc: example

            dn: {BIND_DN}
            objectClass: simpleSecurityObject
            objectClass: organizationalRole
            cn: deskbot
            userPassword: {BIND_PASSWORD}
            """)

    def subtree(self) -> str:
        """A fresh ``ou=`` of its own for one test: tests sharing the server do not meet."""
        ou = f"ou=t{next(_subtrees)},{BASE}"
        self.add(f"dn: {ou}\nobjectClass: organizationalUnit\nou: {ou.split(',')[0][3:]}\n")
        return ou


def person(ou: str, uid: str, cn: str, phone: str | None = None) -> str:
    """An inetOrgPerson entry as LDIF."""
    number = f"telephoneNumber: {phone}\n" if phone else ""
    return (
        f"dn: uid={uid},{ou}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {cn}\nsn: {cn}\n{number}"
    )


def group(ou: str, cn: str, members: list[str]) -> str:
    """A groupOfNames entry as LDIF; members are DNs."""
    lines = "".join(f"member: {dn}\n" for dn in members)
    return f"dn: cn={cn},{ou}\nobjectClass: groupOfNames\ncn: {cn}\n{lines}"


def start_slapd(workdir: Path) -> Slapd:
    server = Slapd(workdir).start()
    server.seed()
    return server


@pytest.fixture(scope="session")
def slapd() -> Iterator[Slapd]:
    """One slapd for the session; each test takes its own ``subtree()``."""
    workdir = Path(tempfile.mkdtemp(prefix="deskbot-slapd-"))
    server = start_slapd(workdir)
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def tls_slapd() -> Iterator[Slapd]:
    """A slapd with a certificate from a CA of the test's own: ldaps:// and StartTLS."""
    workdir = Path(tempfile.mkdtemp(prefix="deskbot-slapd-tls-"))
    server = Slapd(workdir, tls=True).start()
    server.seed()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def own_slapd(tmp_path: Path) -> Iterator[Slapd]:
    """A slapd of the test's own, for tests that stop it."""
    server = start_slapd(tmp_path / "slapd")
    yield server
    server.stop()
