"""A real LDAP directory (OpenLDAP slapd, mdb backend) on a loopback port for recipient verification
and LDAP who-objects.

Base entries: `dc=example,dc=test` with `ou=people` and `ou=groups`; the admin binds as
`cn=admin,dc=example,dc=test`. Tests make an organisational unit of their own (`add_ou`) and fill it with
`add_user` / `add_group` (or raw LDIF with `add()` / `modify()`), and can `stop()` / `start()` the directory
to exercise "LDAP down" behaviour.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from .infra import REPO, Managed, free_port, spawn, wait_port

SCHEMAS = ("core", "cosine", "inetorgperson", "nis")
BASE_DN = "dc=example,dc=test"
ADMIN_DN = f"cn=admin,{BASE_DN}"

BASE_LDIF = f"""dn: {BASE_DN}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,{BASE_DN}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{BASE_DN}
objectClass: organizationalUnit
ou: groups
"""


class LocalLdap:
    def __init__(self, state: Path, port: int | None = None, password: str = "devstack-ldap") -> None:
        self.dir = state / "slapd"
        self.port = port or free_port()
        self.password = password
        self.base_dn = BASE_DN
        self.admin_dn = ADMIN_DN
        self.managed: Managed | None = None
        self._seeded = False
        self._groups: set[str] = set()  # DNs of the groups add_group/add_user created (to add members to)

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def start(self) -> None:
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "slapd.conf"
        includes = [f"include /etc/ldap/schema/{s}.schema" for s in SCHEMAS]
        includes.append(f"include {REPO / 'deploy' / 'ldap' / 'mailgw-test.schema'}")
        conf.write_text("\n".join([
            *includes,
            "modulepath /usr/lib/ldap",
            "moduleload back_mdb",
            f"pidfile {self.dir / 'slapd.pid'}",
            f"argsfile {self.dir / 'slapd.args'}",
            "database mdb",
            f'suffix "{self.base_dn}"',
            f'rootdn "{self.admin_dn}"',
            f"rootpw {self.password}",
            f"directory {data}",
            "maxsize 104857600",
            "index objectClass eq",
            "index mail eq",
            "index proxyAddresses eq",
            "index member eq",
        ]) + "\n")
        log = self.dir / "slapd.out"
        proc = spawn("slapd", ["slapd", "-d", "0", "-f", str(conf), "-h", f"{self.url}/"], log)
        self.managed = Managed("ldap", self.port, log, proc=proc)
        wait_port(self.port, 15, proc, "slapd (LDAP)")
        if not self._seeded:
            self.add(BASE_LDIF)
            self._seeded = True

    def stop(self) -> None:
        if self.managed is not None:
            self.managed.stop()
            self.managed = None

    def add(self, ldif: str) -> None:
        self._ldap("ldapadd", ldif)

    def add_ou(self, name: str) -> str:
        """An organisational unit under the base (a test's own subtree); returns its DN."""
        dn = f"ou={name},{self.base_dn}"
        self.add(f"dn: {dn}\nobjectClass: organizationalUnit\nou: {name}\n")
        return dn

    def add_user(self, uid: str, mail: str, *, base: str, aliases: Sequence[str] = (),
                 groups: Sequence[str] = ()) -> str:
        """A mail user `uid=<uid>,<base>` with address `mail`; `aliases` become `proxyAddresses` values
        (`smtp:` is prepended unless the alias already has a prefix such as `SMTP:`). `groups` are names of
        groups under `base`, created (groupOfNames) when this helper has not made them yet. Returns the DN."""
        dn = f"uid={uid},{base}"
        lines = [f"dn: {dn}", "objectClass: inetOrgPerson"]
        if aliases:
            lines.append("objectClass: mailgwMailRecipient")  # the test schema's proxyAddresses holder
        lines += [f"uid: {uid}", f"cn: {uid}", f"sn: {uid}", f"mail: {mail}"]
        lines += [f"proxyAddresses: {a if ':' in a else 'smtp:' + a}" for a in aliases]
        self.add("\n".join(lines) + "\n")
        for group in groups:
            self.add_group(group, base=base, members=[dn])
        return dn

    def add_group(self, name: str, *, base: str, members: Sequence[str]) -> str:
        """Group `cn=<name>,<base>` (groupOfNames) with `members` (DNs); members are added to a group this
        helper made before. Returns the group's DN."""
        dn = f"cn={name},{base}"
        if dn.lower() in self._groups:
            self.modify(f"dn: {dn}\nchangetype: modify\nadd: member\n"
                        + "".join(f"member: {m}\n" for m in members))
            return dn
        if not members:
            raise ValueError("a groupOfNames needs at least one member")
        self.add(f"dn: {dn}\nobjectClass: groupOfNames\ncn: {name}\n" + "".join(f"member: {m}\n" for m in members))
        self._groups.add(dn.lower())
        return dn

    def set_members(self, group_dn: str, members: Sequence[str]) -> None:
        """Replace the members of a group."""
        self.modify(f"dn: {group_dn}\nchangetype: modify\nreplace: member\n"
                    + "".join(f"member: {m}\n" for m in members))

    def modify(self, ldif: str) -> None:
        self._ldap("ldapmodify", ldif)

    def _ldap(self, tool: str, ldif: str) -> None:
        subprocess.run([tool, "-x", "-H", self.url, "-D", self.admin_dn, "-w", self.password],
                       input=ldif.encode(), check=True, capture_output=True, timeout=30)
