"""The scheduled deployments: per timeframe, `refresh` (ingest, then features) just after each candle closes;
per market, the learning loop (`learn`: features, train, backtest, gate, promote) on `prefect.learn_cron`.

Two ways to run them (schedules need a real Prefect server): `cta flows serve` runs them in its own process;
`cta flows deploy` registers them on the work pool `prefect.work_pool`, whose Prefect workers (`cta flows
worker`, one or many, on any machine with the package installed) run each flow run in a process of its own.
Entrypoints are module paths of the installed package, so a worker needs no source checkout."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cta.candles import symbol_to_path
from cta.components import configured_markets
from cta.config import Settings
from cta.lake import Market
from cta.timeframes import timeframe_ms


@dataclass(frozen=True)
class RefreshSchedule:
    name: str
    timeframe: str
    every: timedelta
    anchor: datetime  # runs fire at anchor + k * every: just after each candle closes


def refresh_schedules(timeframes: tuple[str, ...], offset_s: int) -> list[RefreshSchedule]:
    """One schedule per timeframe, firing `offset_s` after every candle close (pure)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return [
        RefreshSchedule(
            name=f"refresh-{tf}",
            timeframe=tf,
            every=timedelta(milliseconds=timeframe_ms(tf)),
            anchor=epoch + timedelta(seconds=offset_s),
        )
        for tf in timeframes
    ]


def refresh_deployments(settings: Settings) -> list[Any]:
    """One deployment of `refresh_flow` per configured timeframe. Each carries the settings it was registered
    with as its `settings` parameter (JSON, secrets excluded: a worker reads its own from its environment)."""
    from prefect.schedules import Interval
    from prefect.types.entrypoint import EntrypointType

    from flows.refresh import refresh_flow

    return [
        refresh_flow.to_deployment(
            name=s.name,
            schedules=[Interval(s.every, anchor_date=s.anchor, timezone="UTC")],
            parameters={"settings": settings.public_dict(), "timeframes": [s.timeframe]},
            description=f"Ingest the closed {s.timeframe} candles, then their features; {s.every} after close.",
            tags=["refresh", s.timeframe],
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        for s in refresh_schedules(settings.markets.timeframes, settings.prefect.schedule_offset_s)
    ]


def learn_deployment_name(market: Market) -> str:
    """`learn-binance-BTC_USDT-1h`: a deployment name without the `/` and `:` of a market id."""
    return f"learn-{market.exchange}-{symbol_to_path(market.symbol)}-{market.timeframe}"


def learn_deployments(settings: Settings) -> list[Any]:
    """One deployment of `learn_flow` per configured market, on the cron `prefect.learn_cron` (UTC), with a
    concurrency limit of one (a run waits while the market's previous one is still running). Each carries the
    served settings (secrets excluded) and its market as parameters."""
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    from flows.learn import learn_flow

    return [
        learn_flow.to_deployment(
            name=learn_deployment_name(market),
            schedules=[Cron(settings.prefect.learn_cron, timezone="UTC")],
            parameters={"settings": settings.public_dict(), "market_id": str(market)},
            concurrency_limit=1,
            description=f"{market}: features, train, backtest, gate, promote; cron {settings.prefect.learn_cron} (UTC)",
            tags=["learn", str(market)],
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        for market in configured_markets(settings)
    ]


def all_deployments(settings: Settings) -> list[Any]:
    """Everything `cta flows serve` serves and `cta flows deploy` registers."""
    return [*refresh_deployments(settings), *learn_deployments(settings)]


ZOMBIE_AUTOMATION = "cta: crash flow runs whose process died"
# A flow run's process sends a heartbeat every `flows.heartbeat_frequency` seconds (PREFECT_FLOWS_HEARTBEAT_
# FREQUENCY, which every CTA process sets to HEARTBEAT_S: app/runtime_env.py); none for 3 of them: it is gone.
HEARTBEAT_S = 30
ZOMBIE_AFTER_S = 3 * HEARTBEAT_S


async def ensure_work_pool(client: Any, name: str) -> None:
    """Create the process work pool `name` with Prefect's default job template, unless it exists."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        await client.read_work_pool(name)
    except ObjectNotFound:
        template = ProcessWorker.get_default_base_job_template()
        await client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))


async def ensure_zombie_automation(client: Any) -> None:
    """An automation that marks a running flow run Crashed when its heartbeats stop (its worker or machine
    died, or it was killed): without it, the UI would show it Running forever."""
    from datetime import timedelta

    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    existing = await client.read_automations_by_name(ZOMBIE_AUTOMATION)
    if existing:
        return
    final = ("Completed", "Failed", "Cancelled", "Crashed")
    await client.create_automation(
        AutomationCore(
            name=ZOMBIE_AUTOMATION,
            description="A flow run with no heartbeat for 3 heartbeat periods is marked Crashed.",
            trigger=EventTrigger(
                after={"prefect.flow-run.heartbeat"},
                expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in final)},
                match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
                for_each={"prefect.resource.id"},
                posture=Posture.Proactive,
                threshold=1,
                within=timedelta(seconds=ZOMBIE_AFTER_S),
            ),
            actions=[
                ChangeFlowRunState(
                    state=StateType.CRASHED,
                    name="Crashed",
                    force=False,
                    message=f"no heartbeat for {ZOMBIE_AFTER_S} s: the process running this flow run died",
                )
            ],
        )
    )


async def prepare_work_pool(name: str) -> None:
    """The work pool `name` (created if missing) and the zombie automation."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        await ensure_work_pool(client, name)
        await ensure_zombie_automation(client)


def register(settings: Settings) -> list[str]:
    """Register every deployment on the work pool `prefect.work_pool` (created if missing), with the zombie
    automation; the deployments' full names. Idempotent: registering again updates them in place. Synchronous:
    Prefect builds deployments differently inside an event loop."""
    import asyncio

    from prefect.deployments.runner import deploy

    pool = settings.prefect.work_pool
    asyncio.run(prepare_work_pool(pool))
    deployments = all_deployments(settings)
    deploy(*deployments, work_pool_name=pool, build=False, push=False, print_next_steps_message=False)
    return [d.full_name for d in deployments]
