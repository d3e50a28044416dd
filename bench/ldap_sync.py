"""LDAP sync at scale: 10,000 people and 500 groups from a real slapd.

Run by hand: ``.venv/bin/python bench/ldap_sync.py --people 10000 --groups 500 --runs 3``.

It bulk-loads Debian's slapd (the tests' set-up, ``slapadd`` before it starts)
with inetOrgPerson people (extensions ``+49 30 1234-NNNNN``) and groupOfNames
groups: one of 1,000 members, the others of 20. It measures what ``deskbot
run`` does at each refresh: ``LdapSync.sync`` (bind, paged search, build the
directory, serialise it, write the cache) and the merge with the file's
directory; the event loop's worst lateness while a sync runs (a 5 ms ticker
stands in for chat commands); the process's RSS; resolving the 1,000-member
group; and reading the cache back (a start with LDAP down).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from slapd_server import BASE, BIND_DN, BIND_PASSWORD, Slapd  # noqa: E402

from deskbot.directory.snapshot import Directory  # noqa: E402
from deskbot.directory.sync import LdapSync, merge  # noqa: E402
from deskbot.settings.schema import Ldap  # noqa: E402
from deskbot.store.audit import AuditLog  # noqa: E402

BIG = 1000


def ldif(people: int, groups: int) -> str:
    out = [
        f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n",
        f"dn: {BIND_DN}\nobjectClass: simpleSecurityObject\nobjectClass: organizationalRole\n"
        f"cn: deskbot\nuserPassword: {BIND_PASSWORD}\n",
        f"dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n",
    ]
    for i in range(people):
        out.append(
            f"dn: uid=u{i:05d},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: u{i:05d}\n"
            f"cn: Person {i}\nsn: {i}\ntelephoneNumber: +49 30 1234-{10000 + i}\n"
        )
    rng = random.Random(15)
    for g in range(groups):
        size = BIG if g == 0 else 20
        members = rng.sample(range(people), min(size, people))
        lines = "".join(f"member: uid=u{m:05d},ou=people,{BASE}\n" for m in members)
        out.append(
            f"dn: cn=g{g:03d},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: g{g:03d}\n{lines}"
        )
    return "\n".join(out)


async def measure(slapd: Slapd, workdir: Path, runs: int, people: int) -> None:
    proc = psutil.Process()
    settings = Ldap(
        url=slapd.url,
        bind_dn=BIND_DN,
        password_env="X",
        base=BASE,
        phone_uri="sip:{extension}@pbx.example.com",
        extension_digits=5,
    )
    audit = AuditLog(workdir / "audit.sqlite3")
    sync = LdapSync(audit)
    rss_before = proc.memory_info().rss
    times, lags, merges = [], [], []
    for _ in range(runs):
        sync.current = None  # each run a first sync: nothing to compare with
        worst = [0.0]
        done = asyncio.Event()

        async def ticker(worst: list[float] = worst, done: asyncio.Event = done) -> None:
            while not done.is_set():
                t = time.perf_counter()
                await asyncio.sleep(0.005)
                worst[0] = max(worst[0], time.perf_counter() - t - 0.005)

        tick = asyncio.create_task(ticker())
        start = time.perf_counter()
        outcome = await sync.sync(settings, BIND_PASSWORD)
        times.append(time.perf_counter() - start)
        assert outcome.applied, outcome.message
        t = time.perf_counter()
        merged, _ = merge(Directory({}, {}, {}), sync.current)
        merges.append(time.perf_counter() - t)
        done.set()
        await tick
        lags.append(worst[0])
    rss_after = proc.memory_info().rss
    print(f"sync: {outcome.message}")
    print(
        f"sync (bind, paged search, build, cache write): median {statistics.median(times):.2f} s "
        f"({min(times):.2f}-{max(times):.2f}) over {runs} runs"
    )
    print(
        "merge with the file's directory, on the event loop: "
        f"median {statistics.median(merges) * 1000:.1f} ms"
    )
    print(
        "event loop's worst lateness during a sync: "
        f"median {statistics.median(lags) * 1000:.1f} ms, "
        f"max {max(lags) * 1000:.1f} ms"
    )
    print(
        f"RSS: {rss_before / 2**20:.0f} MB before, {rss_after / 2**20:.0f} MB after "
        f"(+{(rss_after - rss_before) / 2**20:.0f} MB)"
    )
    resolve = []
    for _ in range(100):
        t = time.perf_counter()
        phones = merged.resolve("@g000").phones
        resolve.append(time.perf_counter() - t)
    assert len(phones) == min(BIG, people)  # @g000 has BIG members, or everybody
    print(
        f"resolve @g000 ({len(phones)} phones): median {statistics.median(resolve) * 1000:.2f} ms, "
        f"max {max(resolve) * 1000:.2f} ms (100 runs)"
    )
    t = time.perf_counter()
    again = LdapSync(AuditLog(workdir / "audit.sqlite3"))
    print(
        f"read the cache back (a start with LDAP down): {(time.perf_counter() - t) * 1000:.0f} ms, "
        f"{len(again.current.people) if again.current else 0} people; cache row "
        f"{len(audit.cached_directory('ldap')[1]) / 2**20:.1f} MB"
    )  # type: ignore[index]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=10000)
    parser.add_argument("--groups", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="deskbot-ldap-bench-") as tmp:
        workdir = Path(tmp)
        slapd = Slapd(workdir / "slapd")
        t = time.perf_counter()
        slapd.bulk_load(ldif(args.people, args.groups))
        print(
            f"slapadd of {args.people} people and {args.groups} groups: "
            f"{time.perf_counter() - t:.1f} s"
        )
        slapd.start()
        try:
            asyncio.run(measure(slapd, workdir, args.runs, args.people))
        finally:
            slapd.stop()


if __name__ == "__main__":
    main()
