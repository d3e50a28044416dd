"""``deskbot run``: wires the sender, the relay, the sources, health and live reload."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any

from deskbot import config, report
from deskbot.directory import loader
from deskbot.metrics import HealthServer, Metrics
from deskbot.relay import Policy, Relay
from deskbot.senders import Sender, SenderError
from deskbot.sources import Source
from deskbot.store import AuditError, AuditLog

log = logging.getLogger("deskbot")

# Changing these needs a restart; the directory and policy reload live.
RESTART_KEYS = ("sip", "matrix", "slack", "health", "audit")


def build_sources(cfg: config.Config, relay: Relay) -> list[Source]:
    sources: list[Source] = []
    s = cfg.settings
    if s.slack is not None:
        from deskbot.sources.slack import SlackSource

        sources.append(SlackSource(s.slack, relay, cfg.secret))
    if s.matrix is not None:
        from deskbot.sources.matrix import MatrixSource

        sources.append(MatrixSource(s.matrix, relay, cfg.secret))
    return sources


class StartError(RuntimeError):
    """Something deskbot run needs could not start; the message says what and why."""


class Service:
    """Everything ``deskbot run`` starts, in the order it starts."""

    def __init__(self, cfg: config.Config, sender: Sender, sources: list[Source] | None = None):
        self.cfg = cfg
        s = cfg.settings
        self.sender = sender
        self.metrics = Metrics()
        try:
            self.audit = AuditLog(s.audit.path)
        except AuditError as exc:  # nothing may be sent that cannot be recorded
            raise StartError(str(exc)) from None
        self.relay = Relay(sender, loader.from_settings(s), Policy.from_settings(s), self.audit)
        self.relay.on_report.append(lambda job, result: self.metrics.record(job.user.chat, result))
        self.sources = sources if sources is not None else build_sources(cfg, self.relay)
        self.health = HealthServer(
            s.health.listen, self.metrics, self.status, refresh=[self._refresh_gauges]
        )
        self.stopping = asyncio.Event()
        self._loaded_stamp = _stamp(cfg.path)
        self._tasks: list[asyncio.Task[Any]] = []

    def status(self) -> dict[str, Any]:
        health = self.sender.health()
        chats = {a.name: {"connected": a.connected} for a in self.sources}
        ok = health.alive and all(a.connected for a in self.sources)
        return {"ok": ok, "sip": health.details, "chat": chats}

    def _refresh_gauges(self) -> None:
        health = self.sender.health()
        self.metrics.in_flight.set(health.in_flight)
        self.metrics.agent_restarts.set(health.restarts)

    async def reload(self, reason: str) -> bool:
        """Re-read the config; apply the directory and policy, or keep the last good one."""
        self._loaded_stamp = _stamp(self.cfg.path)
        try:
            new = config.load(self.cfg.path)
        except config.ConfigError as exc:
            self.metrics.reloads.labels("rejected").inc()
            log.error(
                "config change rejected (%s); keeping the last good directory:\n%s",
                reason,
                "\n".join(exc.problems),
            )
            text = "deskbot: config change rejected, the last good directory stays:\n" + "\n".join(
                exc.problems[:20]
            )
            for source in self.sources:
                with contextlib.suppress(Exception):
                    await source.notify_admins(text)
            return False
        old = self.cfg.settings
        changed = [k for k in RESTART_KEYS if getattr(old, k) != getattr(new.settings, k)]
        if changed:
            log.warning("config: changes to [%s] take effect after a restart", ", ".join(changed))
        self.relay.use(loader.from_settings(new.settings), Policy.from_settings(new.settings))
        self.cfg = new
        self.metrics.reloads.labels("applied").inc()
        s = new.settings
        log.info(
            "directory reloaded (%s): %d phones, %d people, %d groups",
            reason,
            len(s.phones),
            len(s.people),
            len(s.groups),
        )
        return True

    async def _probe(self, every: float) -> None:
        """[health] probe_every: SIP OPTIONS to every phone, answers as deskbot_phone_up."""
        while not self.stopping.is_set():
            result = await self.relay.probe_all()
            self.metrics.record_probe(result)
            log.debug("probe of every phone: %s", report.summary_text(result))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), every)

    async def _watch(self) -> None:
        from watchfiles import awatch

        path = self.cfg.path.resolve()
        # Watch the folder (editors replace the file), but only this file's changes count.
        # Each second without events the file's stamp is compared too, so an edit made
        # before the watcher was up is not missed.
        async for _changes in awatch(
            path.parent,
            watch_filter=lambda _change, changed: Path(changed).resolve() == path,
            stop_event=self.stopping,
            debounce=300,
            rust_timeout=1000,
            yield_on_timeout=True,
        ):
            if _stamp(path) != self._loaded_stamp:
                await self.reload("file changed")

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT; raise StartError if something cannot start."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(
            signal.SIGHUP, lambda: self._tasks.append(loop.create_task(self.reload("SIGHUP")))
        )
        try:
            await self.sender.start()
        except SenderError as exc:
            raise StartError(f"the SIP agent on {self.cfg.settings.sip.listen}: {exc}") from None
        try:
            await self.health.start()
            for source in self.sources:
                try:
                    await source.start()
                except Exception as exc:  # bad token, unreachable server: say so and stop
                    raise StartError(f"{source.name}: {exc}") from None
                self._tasks.append(loop.create_task(source.run(), name=f"source-{source.name}"))
            self._tasks.append(loop.create_task(self._watch(), name="config-watch"))
            if self.cfg.settings.health.probe_every > 0:
                every = self.cfg.settings.health.probe_every
                self._tasks.append(loop.create_task(self._probe(every), name="phone-probe"))
            if not self.sources:
                log.warning("no [slack] or [matrix] table in %s: no chat to serve", self.cfg.path)
            log.info("deskbot running: %s", ", ".join(a.name for a in self.sources) or "no chat")
            await self.stopping.wait()
            log.info("stopping")
        finally:
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


def run(cfg: config.Config) -> None:
    from deskbot.senders.sip.agent import SipAgent

    async def main() -> None:
        s = cfg.settings
        password = cfg.secret(s.sip.registrar.password_env) if s.sip.registrar else None
        await Service(cfg, SipAgent(s.sip, password)).run()

    return asyncio.run(main())
