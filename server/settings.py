"""Server settings (pydantic-settings): every knob has an environment variable ``STREAMGEN_<NAME>``.

Each default states why it is what it is; ``streamgen serve --help`` exposes the common ones.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from streamgen.config import QUANTIZE_MODES
from streamgen.feature_cache_spec import parse_feature_cache

from .memory import MMAP_THRESHOLD_MAX


DTYPES = ("float32", "bfloat16", "float16")


def default_model() -> str:
    """"world" when its weights ship inside the package, else "tiny" (found without importing torch)."""
    spec = importlib.util.find_spec("streamgen")
    for root in (spec.submodule_search_locations or []) if spec else []:
        if (Path(root) / "weights" / "world" / "config.json").is_file():
            return "world"
    return "tiny"


# Sessions per server a router (server/cluster) plans with when neither it nor max_sessions says: the fixed
# default max_sessions had before admission by measured capacity; a router may read measured_capacity instead.
UNMEASURED_SESSIONS = 4


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMGEN_", extra="ignore")

    # --- what is served
    # "world": the shipped Atari Pong world with sound (streamgen/weights/world, MODEL_CARD.md), trained by
    # this project and streaming faster than real time on a 2-core CPU; keys ArrowUp / ArrowDown / Space.
    # "tiny" while the package ships no "world" weights (a source tree before training has run).
    model: str = Field(default_factory=lambda: default_model())
    # Further models loaded next to ``model`` on the same device (the page offers each of them).
    extra_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # None: CUDA when present, else CPU (streamgen.pipeline.default_device).
    device: str | None = None
    # Blocks generated (and dropped) at start-up so the first user does not pay for lazy init / compile;
    # for admission the median of each batch size's steps but the first is its step time (capacity.py):
    # 6, so that one step caught by the machine's other work does not set it (2 used to).
    warmup_blocks: int = 6
    # --- the GPU path (docs/serving.md). None: "sdpa", which runs everywhere; "triton" is the rolling-cache
    # kernel (CUDA, or the CPU under TRITON_INTERPRET=1); `streamgen info` lists what is installed.
    attention: str | None = None
    # None: bfloat16 on CUDA (Wan's inference dtype), float32 on the CPU.
    dtype: str | None = None
    # torch.compile the block step (streamgen.compile): minutes of warm-up for a faster step on CUDA.
    compile: bool = False
    # None: float linears. "int8": dynamic int8 linears in the blocks (CPU only; streamgen.acceleration).
    quantize: str | None = None
    # None: every layer at every denoising step. "reuse" / "learned", optionally "@K": feature caching
    # between denoising steps (streamgen.feature_cache; speed and quality in docs/benchmarks.md).
    feature_cache: str | None = None
    # The Wan2.1 folder whose VAE and umT5 a student checkpoint uses (else "base" in its streamgen.json).
    base: str | None = None
    # "vae", "tiny" or "preview"; None: the folder's VAE when it has one, else its tiny decoder.
    decoder: str | None = None
    # Image-conditioned models (Matrix-Game 2.0): the image every session starts from (None: mid-grey) and its
    # CLIP tokens (.npy / .safetensors / .pt; None: the documented stand-in); docs/checkpoints.md.
    start_image: str | None = None
    image_embeds: str | None = None

    # --- network
    host: str = "127.0.0.1"  # loopback unless the operator opts in to exposing the server
    port: int = 8000

    # --- admission and liveness
    # None: admit by measured capacity (server/capacity.py): after warm-up the server knows each model's
    # block time on its device and admits only as many sessions as keep every stream at its frame rate.
    # A number overrides the measurement (an operator who measured, or a test that pins its count).
    max_sessions: int | None = None
    # Share of the engine thread's time that admitted streams may use; the rest absorbs jitter and other
    # work on the machine (a stream needing 100 % would fall behind at the first hiccup).
    capacity_utilization: float = 0.8
    # Most sessions of one model stepped together in one batched step (streamgen.batch_step). None: every
    # session of a model that is due for a block, the fastest on a CPU where batching pays; a number bounds
    # one step's latency (and its memory on a GPU) at the cost of more steps per round.
    max_batch: int | None = None
    # Batch sizes the warm-up times (warmup_blocks steps each, sizes above max_batch skipped) so admission
    # knows what k sessions stepped together cost instead of assuming k times one; sizes in between are
    # interpolated. Each size holds that many sessions' caches at once during the warm-up.
    warmup_batch_sizes: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [1, 2, 4, 8])
    retry_after_s: float = 5.0  # what a refused client is told to wait; one typical session turnover
    # A session that sends nothing (not even ping) this long is reclaimed; clients ping every 2 s.
    idle_timeout_s: float = 30.0
    # How often the reaper looks for idle / dead sessions, and the WebSocket protocol-level ping period.
    heartbeat_interval_s: float = 2.0
    # A WebRTC peer that has not connected this long after its answer is reclaimed.
    connect_timeout_s: float = 20.0

    # ICE servers for the server's own candidates, e.g. "stun:stun.l.google.com:19302" behind NAT. Empty by
    # default: aiortc would otherwise query Google's STUN server on every offer (slow, and nothing may be
    # reachable); host candidates suffice on a LAN and loopback.
    ice_servers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Credentials of the ``turn:`` / ``turns:`` entries of ice_servers (a TURN relay needs both; STUN none).
    # The server's peer and the page (``GET /v1/ice``, behind the session token) both use them.
    ice_username: str | None = None
    ice_credential: str | None = None

    # --- security
    auth_token: str | None = None  # None: no auth (fine on loopback; set it when exposing the server)
    # Whether /metrics, /v1/models, /v1/stats and /docs need the token too. Public by default: they hold
    # no secrets and monitoring scrapes them without credentials; /healthz and /readyz are always public.
    ops_require_token: bool = False
    # Empty: only same-origin browser requests (and non-browser clients, which send no Origin). Origins
    # listed here get CORS answers (preflight included), so a page served elsewhere can stream.
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Host header names accepted besides the bound address, localhost names and IP literals ("*": any).
    # A DNS-rebinding page reaches the server under its own domain name, which this refuses.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- limits
    # Control messages: the protocol's own ceiling is 16 KiB (streamgen_client.protocol.MAX_CONTROL_BYTES).
    max_message_bytes: int = 16 * 1024
    # Offer bodies carry SDP (<= 64 KiB in the protocol) plus the start fields.
    max_offer_bytes: int = 80 * 1024
    # Control messages per second per session (token bucket); key repeat at 30 Hz plus mouse at 60 Hz
    # fit with room to spare.
    max_messages_per_s: float = 200.0
    message_burst: int = 400
    # A session that keeps flooding after this many rate_limited answers is closed (1008).
    max_rate_violations: int = 50
    # Key / mouse events kept between two blocks; older ones are dropped (counted) beyond it.
    max_pending_actions: int = 512

    # Per client address (reconnecting must not reset the limits): new sessions per minute (burst
    # allowed) and control messages per second over all of that address's sessions. Twice one session's
    # rate: a user with two tabs is fine, a reconnect loop is not.
    client_sessions_per_min: float = 30.0
    client_session_burst: int = 10
    client_messages_per_s: float = 400.0
    client_message_burst: int = 800
    # Addresses whose buckets are remembered; the least recently seen are forgotten beyond this.
    max_tracked_clients: int = 4096

    # --- timeouts (client-paced steps may never hold a slot or a connection for long)
    # WebSocket: a write that cannot leave this long (the client stopped reading) reclaims the session,
    # and so do more than send_queue_max writes waiting. Frames alone outrun 10 s of TCP buffers.
    write_timeout_s: float = 10.0
    send_queue_max: int = 64
    # Per-connection send buffer, in the kernel and in the transport: what a client that stops reading can
    # make the server hold. 256 KiB carries 1 s of the largest shipped stream; a reader on a 100 ms
    # path still gets 2.5 MB/s through it.
    send_buffer_bytes: int = 256 * 1024
    # POST /v1/offer: the whole body must arrive within this (slow-body clients hold no slot for long).
    body_timeout_s: float = 10.0
    # aiortc's setRemoteDescription (SDP parsing) and createAnswer + setLocalDescription (gathers the
    # server's candidates; host candidates take milliseconds, a STUN server up to a few seconds).
    sdp_timeout_s: float = 10.0
    answer_timeout_s: float = 15.0

    # --- HTTP server (uvicorn; server/http.py)
    # A request head larger than this is refused (431): browsers send a few KiB.
    max_header_bytes: int = 16 * 1024
    # An idle keep-alive connection is closed after this; a new connection must send its request head
    # within handshake_timeout_s (half-open and silent connections otherwise pile up until fds run out).
    keepalive_timeout_s: float = 5.0
    handshake_timeout_s: float = 10.0
    # Concurrent connections; beyond it uvicorn answers 503. Far above max_sessions (page loads, polling).
    max_connections: int = 512

    # --- memory (glibc's malloc, set with mallopt before the server's threads start; server/memory.py and
    # docs/serving.md "Memory"). None leaves glibc's own behaviour; other C libraries ignore both.
    # Arenas (separate heaps) malloc may create: glibc's default is 8 per core, and every thread that
    # allocates while the others hold theirs gets a new one, each keeping its own freed pages; with 2 the
    # encoder / JPEG workers and aiortc share instead of adding arenas as the thread pools grow.
    malloc_arena_max: int | None = 2
    # A fixed threshold (bytes): allocations at least this large get pages of their own (mmap), returned to
    # the OS when freed. None: glibc's dynamic one, raised after each such free (up to 32 MiB), so that large
    # buffers then stay in the heaps. Not fixed by default: at 128 KiB every large tensor temporary is
    # mapped and faulted in anew, measured +40 % CPU per block for `world` on a CPU (docs/serving.md).
    malloc_mmap_threshold: int | None = None

    # --- streaming
    # Generate the next block once fewer than this many blocks of frames wait to be sent: 1 keeps
    # latency lowest; use 2 when a block takes nearly its own duration to generate.
    ahead_blocks: int = 1
    # A frame more than this behind its own schedule (the consumer stalled) is dropped instead of sent late.
    max_frame_age_s: float = 0.5
    jpeg_quality: int = 85  # WebSocket frames: visually clean at a fraction of PNG's cost

    @field_validator("dtype", "quantize")
    @classmethod
    def _one_of(cls, v, info):
        choices = {"dtype": sorted(DTYPES), "quantize": list(QUANTIZE_MODES)}[info.field_name]
        if v is not None and v not in choices:
            raise ValueError(f"{info.field_name}={v!r}: choose one of {choices}")
        return v

    @field_validator("feature_cache")
    @classmethod
    def _feature_cache(cls, v):
        if v is not None:
            parse_feature_cache(v)  # one line naming the bad value
        return v

    @field_validator("extra_models", "allowed_origins", "allowed_hosts", "ice_servers", "warmup_batch_sizes",
                     mode="before")
    @classmethod
    def _split_csv(cls, v):
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("warmup_batch_sizes")
    @classmethod
    def _batch_sizes(cls, v):
        if any(k < 1 for k in v):
            raise ValueError(f"warmup_batch_sizes={v}: every size must be >= 1")
        return sorted(set(v))

    @field_validator("max_sessions", "max_batch", "warmup_blocks", "ahead_blocks", "send_queue_max", "send_buffer_bytes",
                     "max_header_bytes",
                     "max_connections", "client_session_burst", "client_message_burst", "max_tracked_clients")
    @classmethod
    def _positive(cls, v, info):
        low = 0 if info.field_name == "warmup_blocks" else 1
        if v is not None and v < low:
            raise ValueError(f"{info.field_name}={v} must be >= {low}")
        return v

    @field_validator("capacity_utilization", "write_timeout_s", "body_timeout_s", "sdp_timeout_s",
                     "answer_timeout_s", "keepalive_timeout_s", "handshake_timeout_s", "client_sessions_per_min",
                     "client_messages_per_s")
    @classmethod
    def _above_zero(cls, v, info):
        if not v > 0:
            raise ValueError(f"{info.field_name}={v} must be > 0")
        return v

    @field_validator("malloc_arena_max", "malloc_mmap_threshold")
    @classmethod
    def _malloc(cls, v, info):
        low, high = (1, 64) if info.field_name == "malloc_arena_max" else (4096, MMAP_THRESHOLD_MAX)
        if v is not None and not low <= v <= high:
            raise ValueError(f"{info.field_name}={v} must be between {low} and {high}")
        return v

    @model_validator(mode="after")
    def _turn_credentials(self):
        turn = [u for u in self.ice_servers if u.startswith(("turn:", "turns:"))]
        if turn and not (self.ice_username and self.ice_credential):
            raise ValueError(f"ice_servers: {turn[0]!r} is a TURN server; set ice_username and ice_credential too")
        bad = [u for u in self.ice_servers if not u.startswith(("stun:", "stuns:", "turn:", "turns:"))]
        if bad:
            raise ValueError(f"ice_servers: {bad[0]!r} is not a stun:, stuns:, turn: or turns: URL")
        return self

    def ice_server_list(self) -> list[dict]:
        """The ICE servers as RTCIceServer fields (``urls``, and for TURN ``username`` / ``credential``)."""
        out = []
        for url in self.ice_servers:
            entry = {"urls": url}
            if url.startswith(("turn:", "turns:")):
                entry.update(username=self.ice_username, credential=self.ice_credential)
            out.append(entry)
        return out

    @property
    def model_names(self) -> list[str]:
        names = [self.model] + [m for m in self.extra_models if m != self.model]
        return names
