"""``deskbot run``: wires the sender, the relay, the sources, health and live reload."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deskbot.directory import loader
from deskbot.directory.snapshot import Directory
from deskbot.directory.sync import LdapSync, merge, reference_problems
from deskbot.relay import report
from deskbot.relay.relay import Relay
from deskbot.relay.values import Policy
from deskbot.senders.base import Sender, SenderError
from deskbot.senders.route import SiteEdges
from deskbot.service.confirms import ConfirmPoster, poster_for
from deskbot.service.health import HealthServer, Metrics
from deskbot.service.replicas import Replicas
from deskbot.service.silences import Silencer
from deskbot.settings.checks import live_problems
from deskbot.settings.load import ConfigError, load
from deskbot.settings.schema import ApiClient, Config, Settings, counts
from deskbot.sources.api import ApiSource
from deskbot.sources.base import Replies, Source
from deskbot.sources.local import LocalSource
from deskbot.sources.schedule import ScheduleSource
from deskbot.store.base import AuditError
from deskbot.store.connect import audit_password, open_log, replica_id, shown

log = logging.getLogger("deskbot")

# Changing these needs a restart; the directory and policy reload live.
RESTART_KEYS = ("sip", "matrix", "slack", "health", "audit", "api", "web", "nats", "push", "desk")
# ...except an API client's targets: they are policy, and reload with it.
LIVE_KEYS = re.compile(r"api\.clients\.[^.]+\.targets")
WATCH_RETRY = 5.0  # seconds before watching the config's folder again after a watcher error
SITES_EVERY = 15.0  # seconds between pings of each site's edges, or probe_every if shorter


def restart_changes(running: Settings, new: Settings) -> list[str]:
    """The keys under RESTART_KEYS that differ, like ``sip.listen`` (a table: ``matrix``)."""
    found: list[str] = []

    def plain(value: Any) -> Any:
        is_table = dataclasses.is_dataclass(value) and not isinstance(value, type)
        return dataclasses.asdict(value) if is_table else value

    def compare(key: str, old: Any, new: Any) -> None:
        if isinstance(old, dict) and isinstance(new, dict):
            for name in dict.fromkeys([*old, *new]):
                compare(f"{key}.{name}", old.get(name, _ABSENT), new.get(name, _ABSENT))
        elif old != new and not LIVE_KEYS.fullmatch(key):
            found.append(key)

    for key in RESTART_KEYS:
        compare(key, plain(getattr(running, key)), plain(getattr(new, key)))
    return found


_ABSENT = object()


def build_sources(cfg: Config, relay: Relay) -> list[Source]:
    sources: list[Source] = []
    s = cfg.settings
    if s.slack is not None:
        from deskbot.sources.slack.adapter import SlackSource

        sources.append(SlackSource(s.slack, relay, cfg.secret))
    if s.matrix is not None:
        from deskbot.sources.matrix.adapter import MatrixSource

        sources.append(MatrixSource(s.matrix, relay, cfg.secret))
    if s.api is not None:
        from deskbot.sources.api import ApiSource

        sources.append(ApiSource(s.api, relay, cfg.secret))
    if s.web is not None:
        from deskbot.sources.web.app import WebSource

        sign_ins = relay.audit.sign_ins() if relay.audit is not None else None
        found = s.directory.ldap
        directory = (found, lambda: cfg.secret(found.password_env)) if found else None
        sources.append(WebSource(s.web, relay, sign_ins, directory))
    return sources


class StartError(RuntimeError):
    """Something deskbot run needs could not start; the message says what and why."""


class Service:
    """Everything ``deskbot run`` starts, in the order it starts."""

    def __init__(self, cfg: Config, sender: Sender, sources: list[Source] | None = None):
        self.cfg = cfg
        s = cfg.settings
        self.sender = sender
        self.metrics = Metrics()
        try:
            self.replica = replica_id(cfg)
            self.audit = open_log(s.audit, audit_password(cfg), self.replica)
        except AuditError as exc:  # nothing may be sent that cannot be recorded
            raise StartError(str(exc)) from None
        self.audit.on_write.append(self.metrics.record_audit_write)
        self._store_ok = True  # the audit log's last transaction was written
        self.audit.on_write.append(self._note_store)
        self._started = False  # every source started: commands can come in
        self.ldap = LdapSync(self.audit) if s.directory.ldap else None  # the cached one, if any
        self._sync_now = asyncio.Event()  # SIGHUP or a changed [directory.ldap]: sync at once
        self._accept_drop = False  # SIGHUP: an admin vouches for a smaller LDAP result
        self.relay = Relay(sender, self._directory(s), Policy.from_settings(s), self.audit)
        self.relay.on_report.append(lambda job, result: self.metrics.record(job.user.chat, result))
        self.relay.on_refusal.append(self.metrics.record_refusal)
        self.sources = sources if sources is not None else build_sources(cfg, self.relay)
        for source in self.sources:
            if isinstance(source, ApiSource):
                source.on_request.append(self.metrics.record_api_request)
        assert self.relay.deferred is not None  # there is always an audit log here
        # deferred sends and [schedules]: the clock as a source, answering through the chats
        chats = {source.name: source for source in self.sources if isinstance(source, Replies)}
        self.schedule = ScheduleSource(self.relay, self.relay.deferred, chats)
        self.confirms = self._confirm_poster(chats)
        token_env = s.health.reload_token_env
        self.replicas = Replicas(self.relay, self.audit, chats, self.schedule, s.audit.lease)
        self._takeovers_counted = 0
        self.health = HealthServer(
            s.health.listen,
            self.metrics,
            self.status,
            refresh=[self._refresh_gauges],
            ready=self.readiness,
            reload=self._reload_requested,
            reload_token=cfg.secret(token_env) if token_env else "",
        )
        self.stopping = asyncio.Event()
        self.running = s  # what the sender, sources, health and audit were started with
        self.local = None if s.audit.url else LocalSource(self.relay, self._as_run, s.audit.path)
        self._loaded_stamp = _stamp(cfg.path)
        self._reloading = asyncio.Lock()  # one reload at a time, applied in order
        self._tasks: list[asyncio.Task[Any]] = []

    def _as_run(self) -> Settings:
        """The settings commands are carried out with now (a one-shot send needs the same)."""
        if restart_changes(self.running, self.cfg.settings):
            return self.running
        return self.cfg.settings

    def status(self) -> dict[str, Any]:
        health = self.sender.health()
        chats = {a.name: {"connected": a.connected} for a in self.sources}
        ok = health.alive and all(a.connected for a in self.sources)
        status: dict[str, Any] = {"ok": ok, "sip": health.details, "chat": chats}
        status["store"] = {
            "backend": "postgresql" if self.running.audit.url else "sqlite",
            "at": shown(self.running.audit),
            "replica": self.replica,
            "leads_clocks": self.replicas.leading,
            "takeovers": self.relay.takeovers,
        }
        if self.ldap is not None:  # a failed sync keeps the last good directory: still ok
            status["directory"] = {"ldap": self.ldap.health()}
        return status

    def readiness(self) -> dict[str, Any]:
        """/-/ready: started, the audit log writes, the SIP agent is alive, every chat is on."""
        status = self.status()
        ready = self._started and self._store_ok and status["ok"]
        return {**status, "ok": ready, "started": self._started, "store": self._store_ok}

    def _note_store(self, _seconds: float, ok: bool) -> None:
        self._store_ok = ok

    async def _reload_requested(self) -> bool:
        """POST /-/reload: what SIGHUP does (the file again, LDAP at once); True if applied."""
        applied = await self.reload("POST /-/reload")
        self._accept_drop = True
        self._sync_now.set()
        return applied

    def _refresh_gauges(self) -> None:
        health = self.sender.health()
        self.metrics.in_flight.set(health.in_flight)
        self.metrics.agent_restarts.set(health.restarts)
        since = self.ldap.since if self.ldap is not None else None
        self.metrics.sync_age.set(time.time() - since if since is not None else 0)
        new = self.relay.takeovers - self._takeovers_counted
        if new > 0:
            self.metrics.takeovers.inc(new)
            self._takeovers_counted += new

    async def reload(self, reason: str) -> bool:
        """Re-read the config; apply the directory and policy, or keep the last good one."""
        async with self._reloading:
            return await self._reload(reason)

    async def _reload(self, reason: str) -> bool:
        self._loaded_stamp = _stamp(self.cfg.path)
        try:  # in a thread: a large file must not stall the chats or /healthz
            new = await asyncio.to_thread(load, self.cfg.path)
            problems = self._reload_problems(new)
        except ConfigError as exc:
            problems = exc.problems
        if problems:
            self.metrics.reloads.labels("rejected").inc()
            log.error(
                "config change rejected (%s); keeping the last good directory:\n%s",
                reason,
                "\n".join(problems),
            )
            text = "deskbot: config change rejected, the last good directory stays:\n" + "\n".join(
                problems[:20]
            )
            await self._tell_admins(text)
            return False
        changed = restart_changes(self.running, new.settings)
        if changed:  # compared with what runs: an edit undone before a restart warns no more
            log.warning("config: changes to %s take effect after a restart", ", ".join(changed))
        if new.settings.directory.ldap != self.cfg.settings.directory.ldap:
            self._sync_now.set()
        self.relay.use(self._directory(new.settings), Policy.from_settings(new.settings))
        self.cfg = new
        self.metrics.reloads.labels("applied").inc()
        log.info("directory reloaded (%s): %s", reason, counts(new.settings))
        return True

    def _reload_problems(self, new: Config) -> list[str]:
        """check-config's checks beyond the file's own (``load`` made those): LDAP's names,
        as last fetched, for the references; and what this process runs with."""
        s = new.settings
        problems = [f"{new.path}: {k}: {m}" for k, m in live_problems(self.running, s)]
        same_ldap = (
            s.directory.ldap is not None and s.directory.ldap == self.cfg.settings.directory.ldap
        )
        if same_ldap and self.ldap is not None and self.ldap.current is not None:
            problems += reference_problems(new, self.ldap.current)
        return problems

    def _directory(self, s: Settings) -> Directory:
        """The file's directory, with the last good LDAP one merged in (the file wins)."""
        file = loader.from_settings(s)
        if s.directory.ldap is None or self.ldap is None:
            return file
        return merge(file, self.ldap.current)[0]

    async def _tell_admins(self, text: str) -> None:
        for source in self.sources:
            with contextlib.suppress(Exception):
                await source.notify_admins(text)

    async def sync_directory(self, accept_drop: bool = False) -> bool:
        """One LDAP sync; a good result becomes the directory, anything else keeps the last."""
        settings = self.cfg.settings.directory.ldap
        if settings is None:
            return False
        if self.ldap is None:
            self.ldap = LdapSync(self.audit)
        outcome = await self.ldap.sync(
            settings, self.cfg.secret(settings.password_env), accept_drop
        )
        self.metrics.record_sync(outcome.applied)
        if outcome.applied:
            async with self._reloading:  # after a file reload in progress, with its settings
                self.relay.use(self._directory(self.cfg.settings), self.relay.policy)
            self.metrics.reloads.labels("applied").inc()
            log.info("directory synced: %s", outcome.message)
        else:
            log.warning("%s", outcome.message)
        if outcome.tell_admins:
            await self._tell_admins(outcome.tell_admins)
        return outcome.applied

    async def _sync_forever(self) -> None:
        """Every ``refresh`` seconds, or at once when asked (SIGHUP, a changed [directory.ldap])."""
        while True:
            settings = self.cfg.settings.directory.ldap
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._sync_now.wait(), settings.refresh if settings else None
                )
            self._sync_now.clear()
            accept, self._accept_drop = self._accept_drop, False
            try:
                await self.sync_directory(accept)
            except Exception:
                self.metrics.record_sync(False)
                log.exception("LDAP sync failed; the last good directory stays")

    async def _on_sighup(self) -> None:
        await self.reload_safely("SIGHUP")
        self._accept_drop = True
        self._sync_now.set()

    async def reload_safely(self, reason: str) -> None:
        """A reload that never ends the caller (the watcher, a SIGHUP): a failure is logged."""
        try:
            await self.reload(reason)
        except Exception:
            log.exception("config reload (%s) failed; the last good directory stays", reason)

    async def _probe(self, every: float) -> None:
        """[health] probe_every: SIP OPTIONS to every phone, answers as deskbot_phone_up."""
        while not self.stopping.is_set():
            result = await self.relay.probe_all()
            self.metrics.record_probe(result)
            log.debug("probe of every phone: %s", report.summary_text(result))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), every)

    async def _watch_sites(self, edges: SiteEdges) -> None:
        """[nats]: ping each site's edges in turn, answers as deskbot_site_edge_up."""
        probe_every = self.cfg.settings.health.probe_every
        every = min(SITES_EVERY, probe_every) if probe_every > 0 else SITES_EVERY
        while not self.stopping.is_set():
            sites = sorted({p.site for p in self.relay.directory.phones.values() if p.site})
            up = [await self._edge_online(edges, site) for site in sites]
            self.metrics.site_edge_up.clear()  # sites gone from the directory drop out
            for site, online in zip(sites, up, strict=True):
                self.metrics.site_edge_up.labels(site).set(1 if online else 0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), every)

    @staticmethod
    async def _edge_online(edges: SiteEdges, site: str) -> bool:
        try:
            return await edges.edge_online(site)
        except Exception as exc:  # NATS going away mid-ping: no edge reachable now
            log.debug("ping of site %s's edges: %s", site, exc)
            return False

    async def _watch(self) -> None:
        from watchfiles import awatch

        path = self.cfg.path.resolve()
        # Watch the folder (editors replace the file), but only this file's changes count.
        # Each second without events the file's stamp is compared too, so an edit made
        # before the watcher was up is not missed.
        while not self.stopping.is_set():
            try:
                async for _changes in awatch(
                    path.parent,
                    watch_filter=lambda _change, changed: Path(changed).resolve() == path,
                    stop_event=self.stopping,
                    debounce=300,
                    rust_timeout=1000,
                    yield_on_timeout=True,
                ):
                    if _stamp(path) != self._loaded_stamp:
                        await self.reload_safely("file changed")
            except Exception as exc:  # the folder went away, inotify limits, ...
                log.warning("config watcher: %s; watching again in %.0f s", exc, WATCH_RETRY)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), WATCH_RETRY)

    def _confirm_poster(self, chats: Mapping[str, Replies]) -> ConfirmPoster | None:
        """Each confirmation posted to its command's thread."""

        def clients() -> Mapping[str, ApiClient]:  # read anew: a reload's count
            api = self.cfg.settings.api
            return api.clients if api else {}

        def leads() -> bool:  # only the replica firing the clocks sweeps
            return self.replicas.leading

        zone = self.cfg.settings.message.timezone
        return poster_for(self.relay, chats, zone, leads, Silencer(clients))

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT; raise StartError if something cannot start."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(
            signal.SIGHUP,
            lambda: self._tasks.append(loop.create_task(self._on_sighup())),
        )
        try:
            await self.sender.start()
        except SenderError as exc:
            raise StartError(f"the SIP agent on {self.cfg.settings.sip.listen}: {exc}") from None
        try:
            try:
                await self.health.start()
            except OSError as exc:  # the port is taken, the address is not this host's
                why = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else str(exc)
                raise StartError(f"the health endpoint on {self.health.listen}: {why}") from None
            if self.cfg.settings.directory.ldap is not None:  # fresh before the first command
                await self.sync_directory()
            self._tasks.append(loop.create_task(self._sync_forever(), name="ldap-sync"))
            for source in self.sources:
                try:
                    await source.start()
                except Exception as exc:  # bad token, unreachable server: say so and stop
                    raise StartError(f"{source.name}: {exc}") from None
                self._tasks.append(loop.create_task(source.run(), name=f"source-{source.name}"))
            await self.replicas.once()  # holds, leadership: before the clocks first tick
            self._tasks.append(loop.create_task(self.replicas.run(self.stopping), name="replicas"))
            await self.schedule.start()
            self._tasks.append(loop.create_task(self.schedule.run(), name="schedule"))
            if self.local is not None:  # `deskbot send` on this host hands its command here
                await self.local.start()
            if self.confirms is not None:  # pressed before a stop, not posted yet
                self._tasks.append(loop.create_task(self.confirms.catch_up(), name="confirms"))
                self._tasks.append(loop.create_task(self.confirms.run(), name="confirm-sweep"))
            self._tasks.append(loop.create_task(self._watch(), name="config-watch"))
            if self.cfg.settings.nats is not None and isinstance(self.sender, SiteEdges):
                edges = self._watch_sites(self.sender)
                self._tasks.append(loop.create_task(edges, name="site-edges"))
            if self.cfg.settings.health.probe_every > 0:
                every = self.cfg.settings.health.probe_every
                self._tasks.append(loop.create_task(self._probe(every), name="phone-probe"))
            if not self.sources:
                log.warning(
                    "no [slack], [matrix], [api] or [web] table in %s: nothing to serve",
                    self.cfg.path,
                )
            self._started = True
            log.info("deskbot running: %s", ", ".join(a.name for a in self.sources) or "no chat")
            await self.stopping.wait()
            log.info("stopping")
        finally:
            if self.local is not None:
                await self.local.stop()
            with contextlib.suppress(Exception):  # first: its sends answer through the chats
                await self.schedule.stop()
            for source in self.sources:
                with contextlib.suppress(Exception):
                    await source.stop()
            self.stopping.set()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.sender.close()
            await self.health.stop()
            self.audit.close()


def _stamp(path: Path) -> tuple[int, int] | None:
    """What tells one version of the config file from the next."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def run(cfg: Config) -> None:
    from deskbot.senders import route
    from deskbot.senders.sip.agent import SipAgent

    async def main() -> None:
        s = cfg.settings
        password = cfg.secret(s.sip.registrar.password_env) if s.sip.registrar else None
        local: Sender = SipAgent(s.sip, password)
        board = None
        if s.push is not None:  # Poly and Cisco phones: HTTP push beside the SIP agent
            from deskbot.senders.formats import FormatSender
            from deskbot.senders.http.board import Board
            from deskbot.senders.http.sender import HttpSender

            if s.desk is not None and s.desk.url:
                board = Board(s.desk.url, s.desk.expire)
            password_push = cfg.secret(s.push.password_env)
            http = HttpSender(s.push, password_push, timeout=s.sip.timeout, board=board)
            local = FormatSender(local, http)
        sender = route.for_settings(s, cfg.secret, local)
        service = Service(cfg, sender)
        if s.desk is not None and s.desk.url:  # Cisco screens and confirm keys
            from deskbot.sources.desk import DeskSource

            service.sources.append(DeskSource(s.desk, board, service.relay.confirmer))
        await service.run()

    return asyncio.run(main())
