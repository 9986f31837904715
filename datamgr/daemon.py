"""The DatamgrService daemon: the composition root that builds every part and serves them over gRPC.

`run(settings, stop, identity, discovery)`, called by `datamgr.launch.serve` once it holds the data
directory's lock and discovery is probing, opens the database, starts the gRPC server on the Unix
socket (and TCP if configured) with health checking and reflection, and runs until SIGTERM or SIGINT;
then health goes NOT_SERVING, subscriptions end, in-flight calls get `shutdown_grace_s` to finish and
queued writes commit before the database closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from aicap.v1 import aicap_pb2
from datamgr._edge import Edge
from datamgr.admin import AdminService
from datamgr.apps import AdminCredential, AppRegistry
from datamgr.caller import Identify
from datamgr.changefeed import Change, Feed
from datamgr.config import AiSettings, Settings, UdmfSettings
from datamgr.datashare.distributed import DistributedTables
from datamgr.datashare.extension import ExtensionRouter
from datamgr.datashare.indexer import Indexer, IndexerConfig
from datamgr.datashare.published import PublishedBatch, PublishedStore
from datamgr.datashare.service import DataShareService
from datamgr.datashare.tables import ProviderRegistry
from datamgr.datashare.usage import stored_bytes
from datamgr.device.discovery import Discovery
from datamgr.device.identity import Identity
from datamgr.device.pairing_service import SERVICE_NAME as PAIRING_SERVICE
from datamgr.device.pairing_service import PairingService
from datamgr.device.peer_channel import PeerChannels
from datamgr.device.peer_reads import AuditConfig, PeerReadLog
from datamgr.device.peer_server import PeerConfig, PeerServer
from datamgr.device.service import SERVICE_NAME as DEVICE_SERVICE
from datamgr.device.service import DeviceService
from datamgr.device.trust import TrustStore
from datamgr.disk import DiskFloor
from datamgr.errors import ResourceExhausted
from datamgr.gate import CallerGate
from datamgr.hlc import HLC
from datamgr.ingress import IngressPacer
from datamgr.kv._storage_types import MAX_VALUE_LENGTH
from datamgr.kv.service import SERVICE_NAME as KV_SERVICE
from datamgr.kv.service import KvService
from datamgr.kv.storage import KvStorage
from datamgr.quota import Quotas, StorageLimits
from datamgr.storage import Database, create_engine
from datamgr.sync.engine import SyncEngine, SyncOptions
from datamgr.sync.gc import TombstoneCollector
from datamgr.sync.scheduler import AutoSync, SyncScheduler
from datamgr.sync.transport import PeerLinks, SyncServicer
from datamgr.udmf_bridge.bridge import UdmfBridge, UdmfSyncConfig
from datamgr.udmf_bridge.peer import PeerFetcher, UdmfPeerServicer
from datamgr.v1 import admin_pb2, datashare_pb2
from udmf import errors as udmf_errors
from udmf.config import UdmfConfig
from udmf.service import SERVICE_NAME as UDMF_SERVICE
from udmf.service import UdmfService
from udmf.store import UdmfStore

if TYPE_CHECKING:  # aicap needs llama-cpp-python, an optional dependency: imported when the AI is on
    from aicap.embedding import TextEmbedder
    from aicap.service import AiService
    from datamgr.ai_bridge.peers import AiPeers
    from datamgr.ai_http import HttpApi

log = logging.getLogger("datamgr.daemon")
T = TypeVar("T")
SERVICES = (
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    datashare_pb2.DESCRIPTOR.services_by_name["DataShareService"].full_name,
    UDMF_SERVICE,
    KV_SERVICE,
    DEVICE_SERVICE,
    PAIRING_SERVICE,
)
AI_SERVICE = aicap_pb2.DESCRIPTOR.services_by_name["AiService"].full_name
OPEN_SERVICES = (health.SERVICE_NAME, reflection.SERVICE_NAME)  # callable without a token


class HealthServicer(health.aio.HealthServicer):
    """grpc's health servicer, but Watch streams end when the daemon stops (grpc's never return, so an
    open watch would hold shutdown for the whole grace period)."""

    def __init__(self) -> None:
        super().__init__()
        self._stopping = asyncio.Event()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        watch = asyncio.ensure_future(super().Watch(request, context))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({watch, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            stopping.cancel()

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        """Every service's status ("" is the daemon's); grpc's servicer leaves List unimplemented."""
        statuses = {name: health_pb2.HealthCheckResponse(status=s) for name, s in self._server_status.items()}
        return health_pb2.HealthListResponse(statuses=statuses)

    def add_to(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self, server)

    async def shutdown(self) -> None:
        """NOT_SERVING to every watcher, then their streams end."""
        await self.enter_graceful_shutdown()
        await asyncio.sleep(0.05)  # lets the watchers write NOT_SERVING before their streams end
        self._stopping.set()


def _on_revoke(apps: AppRegistry, loop: asyncio.AbstractEventLoop, *listeners: Callable[[str], None]) -> None:
    """Revokes and removals (committed on the writer thread) reach the services' open streams on the
    loop, which end the ones that may no longer deliver (PERMISSION_DENIED, UNAUTHENTICATED)."""

    def revoked(bundle: str) -> None:
        for listener in listeners:
            listener(bundle)

    apps.on_revoke(lambda bundle: loop.call_soon_threadsafe(revoked, bundle))


def _if_removed(apps: AppRegistry, listener: Callable[[str], None]) -> Callable[[str], None]:
    return lambda bundle: None if apps.exists(bundle) else listener(bundle)


def _listen_tcp(server: grpc.aio.Server, settings: Settings, identity: Identity) -> int:
    """The TCP listener's port: TLS with the device certificate (clients pin its fingerprint), or
    plaintext when `tcp_plaintext` allows it (the settings let it only on a loopback address)."""
    assert settings.tcp is not None
    if settings.tcp_plaintext:
        log.warning(
            "the TCP listener %s is plaintext (tcp_plaintext): any local process that can relay or "
            "listen on loopback sees the tokens sent to it",
            settings.tcp,
        )
        return server.add_insecure_port(settings.tcp)
    credentials = grpc.ssl_server_credentials([(identity.key_pem, identity.cert_pem)])
    return server.add_secure_port(settings.tcp, credentials)


def _peer_max_message(settings: Settings) -> int:
    """What the peer port reads: a sync batch (sync.batch_bytes), or one change alone when it is larger
    (a KV value, at most 4 MiB), plus 1 MiB for the rest of the message."""
    return max(settings.sync.batch_bytes, MAX_VALUE_LENGTH) + (1 << 20)


def _quotas(
    settings: Settings, providers: ProviderRegistry, kv: KvStorage, distributed: DistributedTables
) -> Quotas:
    """Every app's storage usage and quota (`datamgr.quota`), wired into the DataShare and KV stores
    (the UDMF store gets its own view in `_start_udmf`)."""
    s = settings.storage
    floor = DiskFloor(settings.data_dir, s.min_free_bytes)
    quotas = Quotas(StorageLimits(s.app_quota_bytes, s.min_free_bytes), floor)
    quotas.measure_with(
        "datashare", lambda conn, bundle: sum(stored_bytes(conn, h)[1] for h in providers.tables(bundle))
    )
    quotas.measure_with("kv", KvStorage.bytes_of)
    quotas.measure_with("udmf", UdmfStore.bytes_of)
    kv.usage = quotas.ledger("kv")
    distributed.usage = quotas.ledger("datashare")
    return quotas


class _UdmfDatabase:
    """The database as UDMF gets it (`udmf._host.Database`): a full disk (datamgr's ResourceExhausted)
    is udmf's own error on its writes, which udmf expects (its sweeper retries it)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.engine = db.engine
        self.read = db.read

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await self._db.write(fn, *args)
        except ResourceExhausted as exc:
            raise udmf_errors.ResourceExhausted(exc.message) from None


async def _start_udmf(
    udmf: UdmfSettings,
    data_dir: Path,
    identify: Identify,
    db: Database,
    quotas: Quotas,
) -> UdmfService:
    """The UDMF servicer, started (stale data of a previous run dropped, the expiry sweeper running)."""
    config = UdmfConfig(
        data_dir=data_dir,
        entry_ttl_s=udmf.entry_ttl_s,
        sweep_interval_s=udmf.sweep_interval_s,
        max_data_bytes=udmf.max_data_bytes,
        inline_blob_bytes=udmf.inline_blob_bytes,
        chunk_bytes=udmf.chunk_bytes,
        lazy_load_timeout_s=udmf.lazy_load_timeout_s,
        max_records=udmf.max_records,
        max_entries_per_record=udmf.max_entries_per_record,
        max_tag_bytes=udmf.max_tag_bytes,
        max_extras_bytes=udmf.max_extras_bytes,
    )
    service = UdmfService(config, identify, _UdmfDatabase(db))
    # blobs reach the disk before the commit: the floor is checked while they stream in (room)
    service.store.usage = quotas.ledger("udmf", floor_at_commit=False)
    await service.start()
    return service


async def _start_ai(ai: AiSettings, identify: Identify, db: Database) -> Any:
    """The AI servicer, started (its default model loading), or None when it cannot run (logged). It
    gets what aicap may not import: who calls, the database. Imported only when enabled:
    llama-cpp-python is an optional dependency."""
    try:
        from aicap.service import AiService
    except ImportError as exc:
        log.error("AI service disabled: %s (install the 'ai' extra: llama-cpp-python)", exc)
        return None
    from aicap.bert_gguf import default_cache_dir
    from aicap.config import AiConfig, EngineConfig, ModelSpec, RunnerConfig, SamplingDefaults, SharedPrefix
    from aicap.errors import AicapError

    config = AiConfig(
        default_model=ai.default_model,
        models=tuple(ModelSpec(m.name, m.path, m.n_ctx, m.chat_template) for m in ai.models),
        runner=RunnerConfig(
            n_ctx=ai.n_ctx,
            n_seq_max=ai.n_seq_max,
            n_threads=ai.n_threads,
            flash_attn=ai.flash_attn,
            cache_type=ai.cache_type,
        ),
        engine=EngineConfig(
            block_size=ai.block_size,
            max_batch_tokens=ai.max_batch_tokens,
            max_running=ai.max_running,
            prefill_pack_tokens=ai.prefill_pack_tokens,
            swap_budget_tokens=ai.swap_budget_tokens,
            prefix_cache_tokens=ai.prefix_cache_tokens,
            prefix_cache_adaptive=ai.prefix_cache_adaptive,
            held_cache_tokens=ai.held_cache_tokens,
            isolate_apps=ai.isolate_prefix_cache_per_app,
            spec_draft_max=ai.spec_draft_max,
            spec_max_batch_tokens=ai.spec_max_batch_tokens,
            spec_token_cost=ai.spec_token_cost,
        ),
        shared_prefixes=tuple(SharedPrefix(p.name, p.text, frozenset(p.apps)) for p in ai.shared_prefixes),
        embedding_model=ai.embedding_model,
        model_cache_dir=ai.model_cache_dir or default_cache_dir(),
        fast_weights=ai.fast_weights,
        solo_weights=ai.solo_weights,
        max_embed_texts=ai.max_embed_texts,
        max_embed_chars=ai.max_embed_chars,
        max_embed_bytes=ai.max_embed_bytes,
        embed_batch_tokens=ai.embed_batch_tokens,
        max_concurrent_per_app=ai.max_concurrent_per_app,
        max_queued_per_app=ai.max_queued_per_app,
        max_waiting=ai.max_waiting,
        max_tokens_limit=ai.max_tokens_limit,
        max_prompt_chars=ai.max_prompt_chars,
        max_n=ai.max_n,
        max_grammar_chars=ai.max_grammar_chars,
        max_context_sources=ai.max_context_sources,
        max_context_k=ai.max_context_k,
        max_context_tokens=ai.max_context_tokens,
        max_passage_chars=ai.max_passage_chars,
        sampling=SamplingDefaults(**ai.sampling.model_dump()),
        metrics_port=ai.metrics_port,
        offload=ai.offload,
        offload_min_level=ai.offload_min_level,
        max_migrations=ai.max_migrations,
        speed_max_age_s=ai.speed_max_age_s,
        max_sessions_per_app=ai.max_sessions_per_app,
        session_idle_s=ai.session_idle_s,
        max_pinned_per_app=ai.max_pinned_per_app,
        max_pinned_chars=ai.max_pinned_chars,
        tokens_per_day_per_app=ai.tokens_per_day_per_app,
    )
    places = ai.offload or ai.serve_peers != "off"  # placement compares measured speeds
    service = AiService(config, identify, db, host_busy=db.busy, measure_speed=places)
    try:
        await service.start()  # the default model loads in the background; its health says when it is ready
    except (FileNotFoundError, AicapError) as exc:  # no built-in model package, a bad default_model
        log.error("AI service disabled: %s", exc)
        return None
    return service


def _indexer_config(ds: Any) -> IndexerConfig:
    return IndexerConfig(
        batch_rows=ds.index_batch_rows,
        max_text_chars=ds.index_max_text_chars,
        hnsw_min_rows=ds.index_hnsw_min_rows,
        poll_s=ds.index_poll_s,
    )


async def _embedder_for(indexer: Indexer, ai: Any) -> None:
    """Hands the indexer the AI service's embedding model once it is loaded; without one, vector
    indexes are unavailable (their rows stay queued) and full text works."""
    try:
        embedder: TextEmbedder = await ai.text_embedder()
    except Exception as exc:  # FailedPrecondition: no embedding model; the model's file is unusable
        reason = f"it is unavailable ({getattr(exc, 'message', exc)})"
        log.warning("DataShare vector indexes are unavailable: %s (full text works)", reason)
        indexer.set_embedder(None, reason)
        return
    log.info("DataShare vector indexes embed with %s", embedder.model_id)
    indexer.set_embedder(embedder)


async def _start_indexer(indexer: Indexer, ai: Any) -> asyncio.Future[None] | None:
    """The DataShare indexes' background embedding, with the AI service's model once it is loaded;
    the backlog joins the AI service's metrics (GetStats, /metrics)."""
    from datamgr.datashare.index_metrics import IndexCollector

    await indexer.start()
    if ai is None:
        return None
    indexer.set_embedder(None, "the embedding model is still loading")
    ai.metrics.register(IndexCollector(indexer))
    return asyncio.ensure_future(_embedder_for(indexer, ai))


async def _ai_serving(ai: Any, health_servicer: HealthServicer) -> None:
    """The AI service's health turns SERVING once its default model is loaded."""
    await health_servicer.set(AI_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        await ai.ready()
    except Exception as exc:
        log.error("the AI service stays NOT_SERVING: %s", getattr(exc, "message", exc))
        return
    await health_servicer.set(AI_SERVICE, health_pb2.HealthCheckResponse.SERVING)


async def _start_http(
    settings: Settings, ai: AiService, identify: Identify, identity: Identity
) -> HttpApi | None:
    """The AI service's OpenAI-compatible HTTP API (`datamgr.ai_http`), listening; None when it cannot
    listen (logged: the daemon serves on without it)."""
    from datamgr.ai_http import HttpApi

    tls = (identity.cert_path, identity.key_path) if settings.http.tls else None
    http = HttpApi(settings.http, ai, identify, tls, settings.shutdown_grace_s)
    try:
        await http.start()
    except OSError as exc:
        log.error("HTTP API disabled: cannot listen on %s: %s", settings.http.listen, exc)
        return None
    return http


def _capabilities(settings: Settings, ai: Any) -> list[str]:
    """What this device advertises it serves: one `ai=<model>` per AI model."""
    capabilities = ["datashare", "udmf"]
    if ai is not None:
        models = [settings.ai.default_model, *(m.name for m in settings.ai.models)]
        capabilities += [f"ai={m}" for m in dict.fromkeys(models)]
    return capabilities


def _sync(
    settings: Settings,
    identity: Identity,
    trust: TrustStore,
    discovery: Discovery,
    storage: KvStorage,
    db: Database,
    kv: KvService,
    loop: asyncio.AbstractEventLoop,
) -> SyncScheduler:
    """The sync engine on the daemon's KV storage, reaching trusted peers where discovery sees them."""
    s = settings.sync
    links = PeerLinks(identity, trust, discovery.table.get, lambda: discovery.running, s.request_timeout_s)
    options = SyncOptions(s.batch_size, s.batch_bytes, s.push_window)
    engine = SyncEngine(storage, db, links.link, links.level, options, kv.on_remote_changes)
    auto = AutoSync(s.auto, s.coalesce_ms / 1000)
    return SyncScheduler(engine, storage, db, trust, links, auto, loop)


async def _start_udmf_sync(
    settings: Settings,
    identity: Identity,
    trust: TrustStore,
    storage: KvStorage,
    udmf: UdmfService,
    db: Database,
    sync: SyncScheduler,
    peer: PeerServer,
    audit: PeerReadLog,
) -> UdmfBridge:
    """UDMF's CROSS_DEVICE data on the sync engine (descriptors in a system KV store) and its reads from
    the device holding it (UdmfPeerService on the peer port, found where sync finds it)."""
    fetcher = PeerFetcher(identity, trust, sync.links.address, audit)
    bridge = UdmfBridge(UdmfSyncConfig(settings.udmf.sync_inline_bytes), storage, udmf, db, fetcher)
    await bridge.start(sync.written)
    UdmfPeerServicer(udmf, trust, identity.device_id, audit).add_to(peer.server)
    return bridge


def _ai_across_devices(
    settings: Settings,
    identity: Identity,
    trust: TrustStore,
    ai: AiService,
    sync: SyncScheduler,
    peer: PeerServer,
    audit: PeerReadLog,
) -> AiPeers:
    """The model across paired devices: this device's generations offloaded to them (placement in
    aicap), and theirs run here if the owner serves them (AiPeerService on the peer port)."""
    from datamgr.ai_bridge.peers import AiPeers
    from datamgr.ai_bridge.servicer import AiPeerServicer

    channels = PeerChannels(identity, trust, sync.links.address)
    peers = AiPeers(identity.device_id, trust, channels, settings.ai.offload_min_level, audit)
    ai.peers = peers
    AiPeerServicer(ai, trust, settings.ai, audit).add_to(peer.server)
    return peers


async def run(  # noqa: PLR0915 - the composition root
    settings: Settings, stop: asyncio.Event, identity: Identity, discovery: Discovery
) -> None:
    """Serves until `stop` is set or SIGTERM/SIGINT arrives; `discovery` is started unless it is off."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    engine = create_engine(settings.db_url, settings.sqlite_synchronous)
    db = Database(engine, settings.read_threads, settings.read_threads_per_app)
    trust = TrustStore(engine)
    apps = AppRegistry(engine)
    identify = Identify(apps, AdminCredential(settings.admin_token_path))  # who calls, for every servicer
    providers = ProviderRegistry(engine)
    ds = settings.datashare
    caps = (ds.subscriber_queue, ds.subscriber_bytes, ds.app_subscriber_bytes)
    ledger: defaultdict[str, int] = defaultdict(int)  # one per-app byte cap over both DataShare feeds
    feed: Feed[Change] = Feed(loop, ds.max_subscriptions_per_app, *caps, ledger=ledger)
    extensions = ExtensionRouter(ds.provider_timeout_s)
    published_feed: Feed[PublishedBatch] = Feed(loop, ds.max_subscriptions_per_app, *caps, ledger=ledger)
    published = PublishedStore(engine, published_feed)
    kv_storage = KvStorage(engine, identity.device_id, HLC(max_skew_ms=settings.sync.max_skew_ms))
    kv = KvService(settings.kv, db, apps, kv_storage, loop, identify)
    distributed = DistributedTables(kv_storage, providers, feed)  # DataShare tables that sync
    quotas = _quotas(settings, providers, kv_storage, distributed)
    indexer = Indexer(db, providers, None, _indexer_config(ds))  # its embedder once the AI service is up

    def on_remove(bundle: str) -> None:
        distributed.remove(bundle)  # the app's tables and their mirror stores
        published.remove(bundle)
        kv.remove_app(bundle)
        quotas.forget(bundle)
        if pacer is not None:
            pacer.forget(bundle)

    # one request message: batches larger than it stream in several (issue 10: an unknown caller's
    # health check is refused by its length prefix, before grpc reads it)
    max_msg = settings.max_message_bytes
    rate = settings.app_ingress_bytes_per_s  # per-app request bytes (datamgr.ingress); 0: unpaced
    pacer = IngressPacer(rate, burst=ds.max_batch_bytes + (1 << 20)) if rate else None
    server = grpc.aio.server(
        interceptors=[
            # unknown callers: nothing big read; apps in debt of request bytes wait (datamgr.gate)
            CallerGate(identify.lookup, OPEN_SERVICES, settings.open_max_message_bytes, pacer=pacer),
            # errors to statuses (datamgr._edge); undecodable requests INVALID_ARGUMENT, decoded ones
            # charged to the app (datamgr._decode)
            Edge(pacer.charge_current if pacer is not None else None),
        ],
        options=[
            ("grpc.max_receive_message_length", max_msg),
            # replies: a provider call forwards a whole batch (datashare.max_batch_bytes)
            ("grpc.max_send_message_length", max(max_msg, ds.max_batch_bytes + (1 << 20))),
        ],
    )
    admin = AdminService(db, apps, identify, on_remove=on_remove, quotas=quotas)
    datashare = DataShareService(
        ds,
        db,
        apps,
        identify,
        providers,
        feed,
        extensions,
        published,
        published_feed,
        distributed,
        quotas.ledger("datashare"),
        indexer,
    )
    udmf = await _start_udmf(settings.udmf, settings.data_dir, identify, db, quotas)
    await kv.start()
    ai = await _start_ai(settings.ai, identify, db) if settings.ai.enabled else None
    embedder_ready = await _start_indexer(indexer, ai)
    if ai is not None:  # grounded chats retrieve as the calling app
        from datamgr.ai_bridge.grounding import AppRetriever, Bounds

        a = settings.ai
        bounds = Bounds(
            a.max_context_scan, a.max_context_scan_bytes, a.max_context_udmf_bytes, a.max_passage_chars
        )
        ai.retriever = AppRetriever(
            datashare.retrieve_as, kv.entries_as, udmf.check_read_as, udmf.texts_as, bounds
        )
    devices = DeviceService(discovery, identify)
    udmf_removed = _if_removed(apps, udmf.app_removed)
    ai_revoked = [ai.revoked] if ai is not None else []  # ends the app's generations
    _on_revoke(apps, loop, datashare.revoked, kv.revoked, devices.revoked, udmf_removed, *ai_revoked)
    p = settings.peer
    peer = PeerServer(
        PeerConfig(
            p.listen,
            p.pairing_listen,
            settings.discovery.device_name,
            settings.discovery.security_level,
            p.pairing_window_s,
            p.pairing_attempts,
            max_message_bytes=_peer_max_message(settings),
            pairing_max_message_bytes=p.pairing_max_message_bytes,
        ),
        identity,
        trust,
        db,
    )
    sync = _sync(settings, identity, trust, discovery, kv_storage, db, kv, loop)
    distributed.set_sync(sync)
    SyncServicer(sync.engine, trust).add_to(peer.server)
    kv.set_sync(sync)
    audit = PeerReadLog(db, AuditConfig(p.audit_max_entries, p.audit_max_age_days * 86_400))
    udmf_sync = await _start_udmf_sync(settings, identity, trust, kv_storage, udmf, db, sync, peer, audit)
    ai_peers = (
        _ai_across_devices(settings, identity, trust, ai, sync, peer, audit) if ai is not None else None
    )
    health_servicer = HealthServicer()
    pairing = PairingService(peer, identify, audit)
    for servicer in (admin, datashare, udmf, kv, devices, pairing, health_servicer, *([ai] if ai else [])):
        servicer.add_to(server)  # each registers its methods; the server's edge maps their errors
    services = (*SERVICES, AI_SERVICE) if ai is not None else SERVICES
    reflection.enable_server_reflection((*services, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    socket_path = settings.socket_path
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()  # a stale socket of a dead daemon; the lock says none is running
    server.add_insecure_port(f"unix:{socket_path}")
    tcp_port = _listen_tcp(server, settings, identity) if settings.tcp else None
    # before the gRPC server starts: grpc's health answers SERVING for "" from then on, and clients
    # that wait for it read daemon.json next (uvicorn's import and start took ~0.3 s)
    http = (
        await _start_http(settings, ai, identify, identity)
        if ai is not None and settings.http.enabled
        else None
    )
    await server.start()
    await peer.start()  # the peer (mutual TLS) and pairing ports, before health says SERVING
    os.chmod(socket_path, 0o666)  # apps authenticate with tokens, not file modes
    for name in ("", *SERVICES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    ai_ready = asyncio.ensure_future(_ai_serving(ai, health_servicer)) if ai is not None else None
    await discovery.async_update(port=peer.port, capabilities=_capabilities(settings, ai))
    discovery.async_advertise()  # the servers listen: announced as soon as probing is done
    catch_up = asyncio.ensure_future(sync.watch(discovery.events)) if discovery.running else None
    tombstones = TombstoneCollector(kv_storage, db, trust, settings.sync.tombstone_gc_interval_s)
    tombstones.start()
    endpoint = {"pid": os.getpid(), "socket": str(socket_path), "tcp_port": tcp_port}
    tls = tcp_port is not None and not settings.tcp_plaintext
    endpoint["tls_fingerprint"] = f"sha256:{identity.fingerprint}" if tls else None
    tcp_security = f"TLS, certificate sha256:{identity.fingerprint}" if tls else "plaintext"
    endpoint |= {"peer_port": peer.port, "pairing_port": peer.pairing_port}
    endpoint["http_port"] = http.port if http is not None else None
    endpoint["http_tls"] = settings.http.tls if http is not None else None
    try:
        (settings.data_dir / "daemon.json").write_text(json.dumps(endpoint))
    except OSError as exc:  # a full disk: serve anyway (clients find the socket without it)
        log.warning("could not write %s: %s", settings.data_dir / "daemon.json", exc)
    log.info(
        "datamgr serving on unix:%s%s (database %s)",
        socket_path,
        f" and tcp {(settings.tcp or '').rsplit(':', 1)[0]}:{tcp_port} ({tcp_security})" if tcp_port else "",
        engine.url.render_as_string(hide_password=True),
    )
    if http is not None:
        log.info("AI HTTP API (OpenAI-compatible) on %s/v1", http.url)

    await stop.wait()
    # Already stopping: a repeated SIGTERM must not kill the daemon, which it would once the loop is
    # closed and asyncio has restored the default action (exit code -15 instead of 0).
    loop.remove_signal_handler(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    log.info("shutting down: finishing in-flight calls (grace %.1f s)", settings.shutdown_grace_s)
    await health_servicer.shutdown()
    if http is not None:
        http.stopping()  # new HTTP requests get 503; open ones end with the AI service below
    await discovery.async_close()  # goodbyes: peers see this device offline at once
    if catch_up is not None:
        catch_up.cancel()
    await tombstones.close()
    if embedder_ready is not None:
        embedder_ready.cancel()
    await indexer.close()  # queued rows stay queued: embedded at the next start
    await sync.close()  # automatic syncs stop (they resume from the last ack next time)
    if ai is not None:
        await ai.drain()  # paired devices' generations go on elsewhere, not cut at the end of the grace
    await udmf_sync.close()  # channels to peers for UDMF reads close
    if ai_peers is not None:
        await ai_peers.close()
    await peer.stop(settings.shutdown_grace_s)  # peer calls end, an open pairing window closes
    feed.close()
    published_feed.close()
    await kv.close()  # subscriptions end, open transactions are dropped
    extensions.close()
    await udmf.close()  # lazy drag sources are told to leave; the sweeper stops
    if ai_ready is not None:
        ai_ready.cancel()
    if ai is not None:
        await ai.close()  # in-flight generations end with UNAVAILABLE; the models are freed
    if http is not None:
        await http.close()  # their answers are sent; idle connections close
    await server.stop(settings.shutdown_grace_s)
    await audit.drain()  # the last cross-device reads' log entries
    await asyncio.to_thread(db.close)
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    with contextlib.suppress(FileNotFoundError):
        (settings.data_dir / "daemon.json").unlink()
    log.info("stopped")
