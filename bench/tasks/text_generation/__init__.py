"""text-generation: a language model generates exactly N tokens after a prompt of random
but fixed token ids. Speed: TTFT, prefill and decode tokens per second, per-token latency
(bench.tasks.text_generation.speed); quality: the KL divergence of the next-token
distribution against the model's reference precision on a fixed real text
(bench.tasks.text_generation.quality); accuracy: MMLU and HumanEval through lm-eval
(bench.evals). The OOM lower bound counts weights and the workload's KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from bench.core.errors import BenchInputError
from bench.tasks.base import Speed, Task

if TYPE_CHECKING:
    from bench.core.config import BenchConfig
    from bench.engines.base import Capabilities, LoadedModel
    from bench.meters.windows import TimedWindow
    from bench.tasks.bounds import Prediction
    from bench.tasks.text_generation.quality import Reference


@dataclass(frozen=True)
class TextGeneration(Task):
    """A model that generates tokens; its subclasses change the request and the reference."""

    def check(self, cfg: "BenchConfig") -> None:
        """It needs the architecture's text-model facts, and a workload inside its context."""
        if not cfg.model.arch.has_text_model:
            raise BenchInputError(f"model.task={self.name} needs model.arch's text-model "
                                  f"facts")
        w, arch = cfg.workload, cfg.model.arch
        assert arch.max_position_embeddings is not None
        depth = max(w.depths or [0])
        if depth + w.prompt_tokens + w.new_tokens > arch.max_position_embeddings:
            raise BenchInputError(
                (f"the deepest of workload.depths ({depth}) + " if depth else "")
                + f"workload.prompt_tokens={w.prompt_tokens} + workload.new_tokens="
                f"{w.new_tokens} exceed the context of model={cfg.model.name} "
                f"(max_position_embeddings={arch.max_position_embeddings})")

    def describe_workload(self, cfg: "BenchConfig") -> str:
        depths = cfg.workload.depths
        return super().describe_workload(cfg) + (
            f" depths={','.join(str(d) for d in sorted(set(depths)))}" if depths else "")

    def lower_bound(self, cfg: "BenchConfig") -> "Optional[Prediction]":
        from bench.tasks.bounds import keeps_layers_on_host, predict_peak

        return None if keeps_layers_on_host(cfg) else predict_peak(cfg)

    def reference(self) -> "Reference":
        """What its quality reference scores: the fixed real text."""
        from bench.tasks.text_generation.quality import FIXED_TEXT

        return FIXED_TEXT

    def needs_reference(self, cfg: "BenchConfig") -> bool:
        from bench.tasks.text_generation import quality

        return quality.needs_reference(cfg, self.reference())

    def prepare(self, cfg: "BenchConfig") -> None:
        from bench.tasks.text_generation import quality

        if quality.applies(cfg):
            quality.ensure_reference(cfg, self.reference())

    def measure_speed(self, loaded: "LoadedModel", cfg: "BenchConfig",
                      window: "TimedWindow") -> Speed:
        from bench.tasks.text_generation.speed import measure_speed, speed_fields

        assert cfg.model.arch.vocab_size is not None
        speed = measure_speed(loaded, cfg.workload, cfg.model.arch.vocab_size, cfg.seed,
                              window=window)
        fields = speed_fields(speed)
        if cfg.workload.depths:  # after the timed window: meters read the workload alone
            from bench.tasks.text_generation.depth import measure_depths

            fields.update(measure_depths(loaded, cfg.workload, cfg.model.arch.vocab_size,
                                         cfg.seed))
        return Speed(fields)

    def quality_note(self, cfg: "BenchConfig", caps: "Capabilities") -> Optional[str]:
        if cfg.eval.quality and not caps.full_logprobs:
            return (f"quality not measured: engine={caps.name} exposes a few top log-"
                    f"probabilities per token, not the whole distribution the KL divergence "
                    f"needs")
        return None

    def measures_quality(self, cfg: "BenchConfig", caps: "Capabilities") -> bool:
        return cfg.eval.quality and caps.full_logprobs

    def measure_quality(self, loaded: "LoadedModel", cfg: "BenchConfig",
                        speed: Optional[Speed]) -> dict[str, Any]:
        from bench.tasks.text_generation.quality import measure_quality

        return measure_quality(loaded, cfg, self.reference())


TASKS = (TextGeneration("text-generation", "LLM", workload_keys=("depths",), accuracy=True,
                        report_rank=0),)
