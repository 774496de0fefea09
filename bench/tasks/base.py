"""The model-task interface: what a task declares and how a cell measures through it.

A model task (`model.task`: text-generation, image-text-to-text, text-to-image, ...) says
what its workload is made of and checks it, how a dry run and a row name that workload,
what lower bound of its peak memory the architecture alone gives, whether it has a quality
reference to build first, and how it measures speed and quality through a loaded model and
the cell's meters; the report takes its heading and layout from it. Everything else (plan,
runner, cell, identity, report) asks the registry (bench.tasks), never `if task in ...`.

Like an engine, a task's package is light: the declarations import no inference library;
what measures imports it inside the methods, in the cell's child process only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from bench.core.errors import BenchInputError

if TYPE_CHECKING:
    from bench.core.config import BenchConfig
    from bench.engines.base import Capabilities, LoadedModel
    from bench.meters.windows import TimedWindow
    from bench.tasks.bounds import Prediction


@dataclass(frozen=True)
class Speed:
    """What a task's speed phase measured: its row fields, and what its quality compares
    (the last call's output; None where quality scores the model itself)."""

    fields: dict[str, Any]
    last: Any = None


def check_image(cfg: "BenchConfig") -> None:
    """workload.image names one of the photographs bench ships (bench.data.images)."""
    from bench.data.images import IMAGES

    image = cfg.workload.image
    if image is not None and image not in IMAGES:
        raise BenchInputError(f"workload.image={image!r} is not valid; valid choices: "
                              f"{', '.join(IMAGES)}")


@dataclass(frozen=True)
class Task:
    """One model task. Subclasses implement the measuring methods; the fields are data."""

    name: str  # the value of model.task
    family: str  # the report's heading for its rows
    # the task-specific workload keys it reads (bench.core.config.WorkloadConfig fields that
    # are null unless a task uses them); another task's key is refused at plan time
    workload_keys: tuple[str, ...] = ()
    # the engine task its models run as (engines declare the tasks they run, Capabilities
    # .tasks): a task over an existing kind of model names that kind
    runs_on: tuple[str, ...] = ()
    layout: str = "tokens"  # the report's columns: tokens (tok/s, TTFT, KL, MMLU) | images
    speed_column: str = "decode_tok_s"  # set when the speed phase finished; the report's
    speed_label: str = "Decode tok/s"  # ... speed column, under this header
    accuracy: bool = False  # lm-eval's accuracy tasks (MMLU, HumanEval) apply
    report_rank: int = 100  # where its heading comes in the report (lower first)
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def engine_tasks(self) -> tuple[str, ...]:
        """The task names an engine must declare to run this one."""
        return self.runs_on or (self.name,)

    @property
    def generates_tokens(self) -> bool:
        return self.layout == "tokens"

    # --- plan time (parent, no heavy import) --------------------------------------------

    def check(self, cfg: "BenchConfig") -> None:
        """Refuse, in one line, a model or workload this task cannot measure."""
        return None

    def describe_workload(self, cfg: "BenchConfig") -> str:
        """What the dry run's line says of the workload."""
        w = cfg.workload
        return f"prompt={w.prompt_tokens} new={w.new_tokens}"

    def workload_fields(self, cfg: "BenchConfig") -> dict[str, Any]:
        """What the row says of its workload (identity columns)."""
        w = cfg.workload
        return {"prompt_tokens": w.prompt_tokens, "new_tokens": w.new_tokens}

    def lower_bound(self, cfg: "BenchConfig") -> "Optional[Prediction]":
        """A lower bound of the cell's peak from its architecture facts (None: none)."""
        return None

    def needs_reference(self, cfg: "BenchConfig") -> bool:
        """Whether the untimed prepare step must build the quality reference (a cache
        lookup: nothing is built or imported here)."""
        return False

    # --- in the cell's child --------------------------------------------------------------

    def prepare(self, cfg: "BenchConfig") -> None:
        """Build what quality compares against, once (cached)."""
        return None

    def measure_speed(self, loaded: "LoadedModel", cfg: "BenchConfig",
                      window: "TimedWindow") -> Speed:
        """The speed phase: warm-up, then the timed calls with `window` open around them."""
        raise NotImplementedError(f"task {self.name} measures no speed")

    def quality_note(self, cfg: "BenchConfig", caps: "Capabilities") -> Optional[str]:
        """Why quality is not measured for this cell (None: it is, or was not asked)."""
        return None

    def measures_quality(self, cfg: "BenchConfig", caps: "Capabilities") -> bool:
        return False

    def measure_quality(self, loaded: "LoadedModel", cfg: "BenchConfig",
                        speed: Optional[Speed]) -> dict[str, Any]:
        """The quality columns against the reference."""
        raise NotImplementedError(f"task {self.name} measures no quality")
