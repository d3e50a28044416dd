"""The directory from LDAP: a real slapd, SIPp as the PBX behind `phone_uri`, deskbot as it runs."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import tomllib
from pathlib import Path

import pytest
from conftest import run_deskbot, until, write_config
from slapd_server import BIND_DN, BIND_PASSWORD, Slapd, group, person

from deskbot.directory.ldap import build, extension_of, name_of
from deskbot.directory.snapshot import Directory, Person, Phone
from deskbot.directory.sync import LdapSync, judge, merge
from deskbot.relay import report
from deskbot.relay.values import ChatUser, Dispatch, Request
from deskbot.senders.sip.agent import SipAgent
from deskbot.service.front import Service
from deskbot.settings.load import ConfigError, load, parse
from deskbot.settings.schema import Ldap

ENV = {"DESKBOT_LDAP_PASSWORD": BIND_PASSWORD}
CONFIG = """
[sip]
listen = "127.0.0.1:0"
timeout = 2.0
[health]
listen = "127.0.0.1:0"
[audit]
path = "{tmp}/audit.sqlite3"
[access]
admins = ["root"]
[phones.100]
uri = "sip:100@127.0.0.1:{pbx}"
label = "Operator"
[people.root]
phone = "100"
[directory.ldap]
url = "{url}"
bind_dn = "{bind_dn}"
password_env = "DESKBOT_LDAP_PASSWORD"
base = "{base}"
phone_uri = "sip:{{extension}}@127.0.0.1:{pbx}"
extension_digits = 3
refresh = {refresh}
"""


class AdminInbox:
    """A source with no chat: what deskbot tells admins lands in ``notices``."""

    name = "inbox"
    connected = True

    def __init__(self) -> None:
        self.notices: list[str] = []

    async def start(self) -> None: ...

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def stop(self) -> None: ...

    async def notify_admins(self, text: str) -> None:
        self.notices.append(text)


def people_ldif(ou: str) -> str:
    return "\n".join(
        [
            person(ou, "alice", "Alice Archer", "+49 30 1234-486"),
            person(ou, "bob", "Bob Baker", "487"),
            person(ou, "carol", "Carol Cook", "(030) 1234 489"),
            person(ou, "dave", "Dave Dunn", "490"),
            group(ou, "Sales Team", [f"uid=alice,{ou}", f"uid=bob,{ou}"]),
        ]
    )


def write(tmp_path: Path, slapd: Slapd, base: str, pbx: int, refresh: float = 300) -> Path:
    body = CONFIG.format(
        tmp=tmp_path, pbx=pbx, url=slapd.url, bind_dn=BIND_DN, base=base, refresh=refresh
    )
    return write_config(tmp_path / "deskbot.toml", body)


async def send(service: Service, text: str) -> str:
    job = service.relay.prepare(Request(ChatUser("console", "root"), text))
    assert isinstance(job, Dispatch), job
    return report.plain(await service.relay.deliver(job))


def uris(phone) -> list[str]:
    return [m.request_uri.split("@")[0] for m in phone.received()]


async def test_a_person_a_group_and_a_changed_extension_from_slapd_reach_the_right_phones(
    slapd: Slapd, sipp, tmp_path: Path
):
    pbx = sipp(200)
    ou = slapd.subtree()
    slapd.add(people_ldif(ou))
    cfg = load(write(tmp_path, slapd, ou, pbx.port, refresh=1), ENV)
    service = Service(cfg, SipAgent(cfg.settings.sip), sources=[AdminInbox()])
    runner = asyncio.create_task(service.run())
    try:
        await until(lambda: "alice" in service.relay.directory.people, what="the first sync")
        assert (await send(service, "alice hello")).startswith("✅ 486 (Alice Archer): 200 OK")
        lines = (await send(service, "@sales-team standup")).splitlines()
        assert [ln.split(":")[0] for ln in lines[:2]] == [
            "✅ 486 (Alice Archer)",
            "✅ 487 (Bob Baker)",
        ]
        assert lines[-1] == "2/2 delivered"
        assert (await send(service, "100,carol hi")).splitlines()[1].startswith("✅ 489 (Carol")
        slapd.modify(
            f"dn: uid=bob,{ou}\nchangetype: modify\nreplace: telephoneNumber\n"
            "telephoneNumber: +49 30 1234-488\n"
        )
        await until(
            lambda: service.relay.directory.people["bob"].phone == "488",
            what="the next sync to take bob's new extension",
        )
        assert (await send(service, "bob you moved")).startswith("✅ 488 (Bob Baker): 200 OK")
        await until(lambda: len(pbx.received()) == 6, what="six MESSAGEs at the PBX")
        assert uris(pbx) == ["sip:486", "sip:486", "sip:487", "sip:100", "sip:489", "sip:488"]
    finally:
        service.stopping.set()
        await asyncio.wait_for(runner, 20)


async def test_ldap_stopped_mid_run_keeps_the_last_good_directory_and_send_uses_the_cache(
    own_slapd: Slapd, sipp, tmp_path: Path, caplog
):
    pbx = sipp(200)
    own_slapd.add(people_ldif(own_slapd.subtree()))
    path = write(tmp_path, own_slapd, "dc=example,dc=com", pbx.port, refresh=1)
    cfg = load(path, ENV)
    caplog.set_level(logging.INFO)
    service = Service(cfg, SipAgent(cfg.settings.sip), sources=[AdminInbox()])
    runner = asyncio.create_task(service.run())
    try:
        await until(lambda: "alice" in service.relay.directory.people, what="the first sync")
        own_slapd.stop()
        await until(
            lambda: any("cannot connect" in r.getMessage() for r in caplog.records),
            what="a sync against the stopped server",
        )
        warning = next(r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage())
        assert warning.startswith(f"LDAP {own_slapd.url}: cannot connect")
        assert "keeping the last good LDAP directory (4 people, cached " in warning
        assert (await send(service, "@sales-team still here")).endswith("2/2 delivered")
        ldap = service.status()["directory"]["ldap"]  # what /healthz shows
        assert ldap["people"] == 4 and "cannot connect" in ldap["error"]
        assert service.status()["ok"] is True  # the last good directory still serves
    finally:
        service.stopping.set()
        await asyncio.wait_for(runner, 20)
    result = await asyncio.to_thread(run_deskbot, "send", "-c", str(path), "carol", "hi", env=ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("489\tCarol Cook\t200 OK")
    assert f"deskbot: LDAP {own_slapd.url}: cannot connect" in result.stderr
    assert "keeping the last good LDAP directory (4 people, cached " in result.stderr
    assert BIND_PASSWORD not in result.stderr


def test_a_shell_send_uses_ldaps_last_result_until_refresh_unless_a_target_is_new(
    own_slapd: Slapd, sipp, tmp_path: Path
):
    pbx = sipp(200)
    own_slapd.add(people_ldif(own_slapd.subtree()))
    path = write(tmp_path, own_slapd, "dc=example,dc=com", pbx.port, refresh=300)
    first = run_deskbot("send", "-c", str(path), "carol", "hi", env=ENV)
    assert first.returncode == 0 and first.stdout.startswith("489\tCarol Cook\t200 OK")
    own_slapd.stop()
    # younger than refresh: the send does not ask LDAP (it would say it cannot connect)
    again = run_deskbot("send", "-c", str(path), "@sales-team", "standup", env=ENV)
    assert again.returncode == 0, again.stderr
    assert [line.split("\t")[:3] for line in again.stdout.splitlines()] == [
        ["486", "Alice Archer", "200 OK"],
        ["487", "Bob Baker", "200 OK"],
    ]
    assert "LDAP" not in again.stderr
    # a target the cached result lacks: LDAP is asked at once (a new hire needs no wait)
    new = run_deskbot("send", "-c", str(path), "erin", "welcome", env=ENV)
    assert new.returncode == 2
    assert f"deskbot: LDAP {own_slapd.url}: cannot connect" in new.stderr
    assert "erin" in new.stderr
    assert uris(pbx) == ["sip:489", "sip:486", "sip:487"]


async def test_a_result_losing_more_than_half_the_people_is_refused_until_sighup(
    slapd: Slapd, sipp, tmp_path: Path, caplog, monkeypatch
):
    monkeypatch.setenv("DESKBOT_LDAP_PASSWORD", BIND_PASSWORD)  # a SIGHUP re-reads the config
    caplog.set_level(logging.INFO)
    pbx = sipp(200)
    ou = slapd.subtree()
    slapd.add(people_ldif(ou))
    cfg = load(write(tmp_path, slapd, ou, pbx.port, refresh=1), ENV)
    inbox = AdminInbox()
    service = Service(cfg, SipAgent(cfg.settings.sip), sources=[inbox])
    runner = asyncio.create_task(service.run())
    try:
        await until(lambda: "dave" in service.relay.directory.people, what="the first sync")
        slapd.delete(f"cn=Sales Team,{ou}", *(f"uid={u},{ou}" for u in ("bob", "carol", "dave")))
        await until(lambda: inbox.notices, what="the admins' notice")
        assert inbox.notices == [
            f"deskbot: LDAP {slapd.url}: sync refused: it has 1 person, the last good one 4 "
            "(more than half would be gone); keeping the last good LDAP directory (4 people, "
            f"cached {inbox.notices[0].split('cached ')[1][:19]}). If the directory is right, "
            "send deskbot SIGHUP (systemctl reload deskbot) to take it."
        ]
        await until(
            lambda: sum("sync refused" in r.getMessage() for r in caplog.records) >= 2,
            what="a second refused sync",
        )
        assert len(inbox.notices) == 1  # told once, not at every sync
        assert (await send(service, "dave still listed")).startswith("✅ 490 (Dave Dunn)")
        os.kill(os.getpid(), signal.SIGHUP)
        await until(lambda: "dave" not in service.relay.directory.people, what="the SIGHUP sync")
        assert len(inbox.notices) == 1
        assert sorted(service.relay.directory.people) == ["alice", "root"]
    finally:
        service.stopping.set()
        await asyncio.wait_for(runner, 20)


def test_check_config_names_ldap_when_it_cannot_bind_and_summarises_when_it_can(
    slapd: Slapd, tmp_path: Path
):
    ou = slapd.subtree()
    slapd.add(people_ldif(ou))
    path = write(tmp_path, slapd, ou, 9)
    wrong = run_deskbot("check-config", "-c", str(path), env={"DESKBOT_LDAP_PASSWORD": "nope"})
    assert wrong.returncode == 2
    assert wrong.stdout.splitlines() == [
        f"{path}: directory.ldap: LDAP {slapd.url}: cannot bind as {BIND_DN}: invalidCredentials"
    ]
    right = run_deskbot("check-config", "-c", str(path), env=ENV)
    assert right.returncode == 0, right.stdout
    assert f"{path}: ok: 1 phone, 1 person, 0 groups; LDAP: 4 people, 4 phones, 1 group;" in (
        right.stdout
    )
    write_config(path, path.read_text().replace('admins = ["root"]', 'admins = ["alice", "eve"]'))
    unknown = run_deskbot("check-config", "-c", str(path), env=ENV)
    assert unknown.returncode == 2
    assert unknown.stdout.splitlines() == [
        f"{path}: access.admins[1]: 'eve' is not in [people] or LDAP"
    ]
    write_config(
        path, path.read_text().replace(f'base = "{ou}"', 'base = "ou=gone,dc=example,dc=com"')
    )
    gone = run_deskbot("check-config", "-c", str(path), env=ENV)
    assert gone.returncode == 2
    assert gone.stdout.startswith(
        f"{path}: directory.ldap: LDAP {slapd.url}: cannot search ou=gone,dc=example,dc=com: "
        "noSuchObject"
    )


# -- pure: mapping, merging, judging -------------------------------------------------


@pytest.mark.parametrize(
    ("value", "digits", "extension"),
    [
        ("486", None, "486"),
        (" 4 86 ", None, "486"),
        ("+49 30 1234-486", None, "49301234486"),
        ("+49 30 1234-486", 3, "486"),
        ("(030) 1234/486", 4, "4486"),
        ("030.1234.486", None, "0301234486"),
        ("ext. 486", None, None),
        ("", None, None),
        ("+", None, None),
        ("1234567890123456", None, None),  # 16 digits: longer than any extension
        ("٤٨٦", None, None),  # Arabic-Indic digits are not dialled
    ],
)
def test_an_extension_is_the_digits_of_the_number(value, digits, extension):
    assert extension_of(value, digits) == extension


def test_names_are_lower_case_and_a_group_name_loses_its_spaces():
    assert name_of("John.Smith") == "john.smith"
    assert name_of("Sales Team") == "sales-team"
    assert name_of("Ünsere Leute") is None
    assert name_of("") is None


def ldap_settings(**keys) -> Ldap:
    base = dict(url="ldap://x", bind_dn="cn=a", password_env="P", base="dc=x")
    return Ldap(**base, phone_uri="sip:{extension}@pbx", **keys)


def test_an_active_directory_result_maps_sam_account_names_ip_phones_and_nested_groups():
    settings = ldap_settings(preset="ad", slack_attribute="extensionAttribute1")
    people = [
        (
            "CN=Alice,OU=Staff,DC=corp",
            {
                "sAMAccountName": ["Alice"],
                "displayName": ["Alice A"],
                "ipPhone": ["486"],
                "extensionAttribute1": ["U0ALICE"],
            },
        ),
        ("CN=Bob,OU=Staff,DC=corp", {"sAMAccountName": ["bob"], "displayName": [], "ipPhone": []}),
        ("CN=Bad,OU=Staff,DC=corp", {"sAMAccountName": ["has space$"], "ipPhone": ["1"]}),
    ]
    groups = [
        (
            "CN=Sales,OU=Groups,DC=corp",
            {
                "cn": ["Sales"],
                "member": [
                    "cn=alice, ou=staff,dc=corp",
                    "CN=EMEA,OU=Groups,DC=corp",
                    "CN=Gone,DC=corp",
                ],
            },
        ),
        ("CN=EMEA,OU=Groups,DC=corp", {"cn": ["EMEA"], "member": ["CN=Bob,OU=Staff,DC=corp"]}),
    ]
    fetched = build(settings, people, groups)
    d = fetched.directory
    assert d.people["alice"] == Person("alice", "Alice A", "486", {"slack": "U0ALICE"})
    assert d.people["bob"] == Person("bob", "bob", None, {})
    assert d.phones == {"486": Phone("486", "sip:486@pbx", "Alice A")}
    assert d.groups == {"sales": ("alice", "@emea"), "emea": ("bob",)}
    assert fetched.skipped == [
        "1 person without a usable sAMAccountName",
        "1 person without an extension in ipPhone",
    ]
    assert [p.extension for p in d.resolve("@sales").phones] == ["486"]
    assert d.person_by("slack", "U0ALICE") is d.people["alice"]


def test_the_file_wins_over_ldap_for_the_same_name_extension_or_chat_id():
    file = Directory(
        {"486": Phone("486", "sip:486@10.0.0.86", "Reception")},
        {
            "alice": Person("alice", "Alice", "486", {"slack": "U0ALICE"}),
            "zed": Person("zed", "Zed", "487", {}),
        },
        {"sales": ("alice",)},
    )
    ldap = Directory(
        {"486": Phone("486", "sip:486@pbx", "A"), "487": Phone("487", "sip:487@pbx", "B")},
        {
            "alice": Person("alice", "LDAP Alice", "487", {}),
            "bob": Person("bob", "Bob", "487", {"slack": "U0ALICE", "matrix": "@bob:x"}),
            "sales": Person("sales", "Sales", None, {}),
        },
        {"sales": ("bob",), "ops": ("bob", "alice")},
    )
    merged, overridden = merge(file, ldap)
    assert overridden == ["phone 486", "alice", "sales", "@sales"]
    assert merged.phones["486"].uri == "sip:486@10.0.0.86"
    assert merged.people["alice"].display == "Alice"
    assert merged.people["zed"].phone == "487"  # a file person at an LDAP extension
    assert merged.people["bob"].ids == {"matrix": "@bob:x"}  # the Slack id is the file's alice's
    assert merged.groups == {"ops": ("bob", "alice"), "sales": ("alice",)}
    assert "sales" not in merged.people


def test_ldap_phones_take_the_fleets_format():
    file = Directory({}, {}, {}, "pbx.example.com", default_format="snom-infobox")
    ldap = Directory({"487": Phone("487", "sip:487@pbx", "B")}, {}, {})
    merged, _ = merge(file, ldap)
    assert merged.phones["487"].format == "snom-infobox"
    assert merged.resolve("4711").phones[0].format == "snom-infobox"  # unlisted, via domain


def test_an_empty_result_or_one_losing_more_than_half_the_people_is_refused():
    def of(n: int) -> Directory:
        return Directory({}, {f"p{i}": Person(f"p{i}", "", None) for i in range(n)}, {})

    assert judge(None, of(0)) == "it has no people (a wrong filter or base, or an empty server)"
    assert judge(of(10), of(0), accept_drop=True) is not None  # not even an admin takes nothing
    assert judge(None, of(1)) is None
    assert judge(of(10), of(5)) is None
    assert (
        judge(of(10), of(4))
        == "it has 4 people, the last good one 10 (more than half would be gone)"
    )
    assert judge(of(10), of(4), accept_drop=True) is None


async def test_a_failed_sync_never_replaces_the_cached_directory(tmp_path: Path):
    from deskbot.directory.ldap import Fetched, LdapError
    from deskbot.store.audit import AuditLog

    good = Directory({"486": Phone("486", "sip:486@pbx", "A")}, {"a": Person("a", "A", "486")}, {})
    answers: list[Fetched | LdapError] = [Fetched(good), LdapError("LDAP ldap://x: cannot connect")]

    def fetcher(settings, password):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    audit = AuditLog(tmp_path / "a.sqlite3")
    first = LdapSync(audit, fetcher)
    assert first.current is None
    assert (await first.sync(ldap_settings(), "pw")).applied
    outcome = await first.sync(ldap_settings(), "pw")
    assert not outcome.applied and first.current is good
    assert outcome.message.startswith("LDAP ldap://x: cannot connect; keeping the last good")
    again = LdapSync(AuditLog(tmp_path / "a.sqlite3"))  # a restart: the cache is read back
    assert (
        again.current is not None and again.current.resolve("a").phones == good.resolve("a").phones
    )


def test_a_bad_ldap_table_is_one_line_per_problem_naming_the_key(tmp_path: Path):
    raw = {
        "directory": {
            "ldap": {
                "url": "http://dc1",
                "bind_dn": "cn=a",
                "password_env": "DESKBOT_LDAP_PASSWORD",
                "base": "dc=x",
                "phone_uri": "sip:486@pbx",
                "prest": "ad",
            }
        }
    }
    with pytest.raises(ConfigError) as caught:
        parse(raw, tmp_path / "d.toml", {})
    assert caught.value.problems == [
        f"{tmp_path}/d.toml: directory.ldap.url: 'http://dc1' is not an ldap:// or ldaps:// URL",
        f"{tmp_path}/d.toml: directory.ldap.phone_uri: must contain {{extension}}, "
        "like sip:{extension}@pbx.example.com",
        f"{tmp_path}/d.toml: directory.ldap.prest: unknown key (check the spelling against "
        "config.example.toml)",
    ]
    del raw["directory"]["ldap"]["prest"]
    raw["directory"]["ldap"].update(url="ldap://dc1", phone_uri="sip:{extension}@pbx")
    with pytest.raises(ConfigError) as caught:
        parse(raw, tmp_path / "d.toml", {})
    assert caught.value.problems == [
        f"{tmp_path}/d.toml: directory.ldap.password_env: environment variable "
        "DESKBOT_LDAP_PASSWORD is not set"
    ]


def test_the_examples_ldap_block_is_valid_once_uncommented():
    example = (Path(__file__).parent.parent / "config.example.toml").read_text()
    block = example[example.index("# [directory.ldap]") : example.index("# Matrix: runs")]
    text = "\n".join(line.removeprefix("# ") for line in block.splitlines())
    s = parse(tomllib.loads(text), Path("x.toml"), {"DESKBOT_LDAP_PASSWORD": "x"}).settings
    assert s.directory.ldap is not None and s.directory.ldap.refresh == 300
    assert s.directory.ldap.extension_digits == 3 and s.directory.ldap.preset == "openldap"


@pytest.mark.parametrize("how", ["ldaps", "starttls"])
def test_ldaps_and_starttls_read_slapd_with_the_ca_file_and_refuse_without_it(
    tls_slapd: Slapd, tmp_path: Path, how: str
):
    ou = tls_slapd.subtree()
    tls_slapd.add(people_ldif(ou))
    url = tls_slapd.ldaps_url if how == "ldaps" else tls_slapd.url
    body = CONFIG.format(tmp=tmp_path, pbx=9, url=url, bind_dn=BIND_DN, base=ou, refresh=300)
    tls = "start_tls = true\n" if how == "starttls" else ""
    untrusted = write_config(tmp_path / "untrusted.toml", body + tls)
    trusted = write_config(tmp_path / "d.toml", body + tls + f'ca_file = "{tls_slapd.ca_file}"\n')

    refused = run_deskbot("check-config", "-c", str(untrusted), env=ENV)
    right = run_deskbot("check-config", "-c", str(trusted), env=ENV)

    assert refused.returncode == 2, refused.stdout  # a certificate of an unknown CA
    assert f"directory.ldap: LDAP {url}: " in refused.stdout
    assert right.returncode == 0, right.stdout
    assert "LDAP: 4 people, 4 phones, 1 group;" in right.stdout


def test_more_people_than_the_servers_size_limit_come_page_by_page(tmp_path: Path):
    """slapd gives deskbot's account at most 500 entries per search, as AD gives 1,000:
    1,200 people arrive only through paged results, past the first page."""
    server = Slapd(tmp_path / "slapd", size_limit=500).start()
    try:
        server.seed()
        ou = server.subtree()
        server.add(
            "\n".join(person(ou, f"p{i}", f"Person {i}", str(1000 + i)) for i in range(1200))
        )
        body = CONFIG.format(
            tmp=tmp_path, pbx=9, url=server.url, bind_dn=BIND_DN, base=ou, refresh=300
        ).replace("extension_digits = 3", "extension_digits = 4")
        path = write_config(tmp_path / "d.toml", body)
        result = run_deskbot("check-config", "-c", str(path), env=ENV)
        assert result.returncode == 0, result.stdout
        assert re.search(r"LDAP: 1,?200 people, 1,?200 phones, 0 groups;", result.stdout), result
    finally:
        server.stop()
