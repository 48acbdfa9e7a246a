"""One place composes a round: discovery, the probe round and the host audits.

`serve` and `check` differ only in where the heavy botocore work runs and how
much the audits say: the daemon keeps the SDK view and credentials in child
processes and counts connections at a pace; a one-shot check works in-process
and names the processes behind connections.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from agent.audit.host import HostAudits
from agent.config import Settings
from agent.discovery import Discovery, discover
from agent.results import Report
from agent.runner import Prober, run_round


class Rounds:
    def __init__(self, settings: Settings, *, resident: bool) -> None:
        self.resident = resident
        self.audits = HostAudits(with_owners=not resident)
        self.settings = settings
        self.prober = Prober(settings, credentials_in_child=resident)

    def reload(self, settings: Settings) -> None:
        """New settings and a new prober; the audits keep their paced state.

        The prober is built first: if it cannot be (ConfigError), nothing has changed.
        """
        prober = Prober(settings, credentials_in_child=self.resident)
        self.settings, self.prober = settings, prober

    def discover(self, previous: Discovery | None = None) -> Discovery:
        return discover(self.settings, sdk_in_child=self.resident, previous=previous)

    def run(
        self,
        disc: Discovery,
        *,
        only_endpoint: str | None = None,
        pool: ThreadPoolExecutor | None = None,
    ) -> Report:
        report = run_round(self.settings, disc, self.prober, only_endpoint=only_endpoint, pool=pool)
        return self.audits.apply(self.settings, report)
