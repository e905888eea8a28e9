"""The training budget: documents seen, the one quantity held equal across compared strategies.

    documents seen = optimizer steps x per-device batch x gradient accumulation x world size x group size

(the paper's code left out gradient accumulation and so trained twice as long as it said). The number of
optimizer steps is the largest whose documents do not exceed the budget; the realised figure is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

from rankdistill.errors import UserInputError


@dataclass(frozen=True)
class Budget:
    """Steps and documents for a budget of ``budget_docs`` documents."""

    budget_docs: int
    batch_size: int
    grad_accum: int
    world_size: int
    group_size: int

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "world_size", "group_size"):
            if getattr(self, name) < 1:
                raise UserInputError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")
        if self.steps < 1:
            raise UserInputError(
                f"--budget-docs {self.budget_docs} is smaller than one optimizer step "
                f"({self.docs_per_step} documents = batch {self.batch_size} x accumulation {self.grad_accum} "
                f"x world size {self.world_size} x group size {self.group_size})",
                fix=f"give --budget-docs {self.docs_per_step} or more, or a smaller batch")

    @property
    def groups_per_step(self) -> int:
        """Training queries (groups) per optimizer step, over all devices and accumulation steps."""
        return self.batch_size * self.grad_accum * self.world_size

    @property
    def docs_per_step(self) -> int:
        return self.groups_per_step * self.group_size

    @property
    def steps(self) -> int:
        return self.budget_docs // self.docs_per_step

    @property
    def realised_docs(self) -> int:
        """Documents actually seen: ``steps x docs_per_step`` (at most the budget)."""
        return self.steps * self.docs_per_step

    def warmup_steps(self, ratio: float) -> int:
        return round(ratio * self.steps)

    def as_dict(self) -> dict:
        return {"budget_docs": self.budget_docs, "realised_docs": self.realised_docs, "steps": self.steps,
                "docs_per_step": self.docs_per_step, "groups_per_step": self.groups_per_step,
                "batch_size": self.batch_size, "grad_accum": self.grad_accum, "world_size": self.world_size,
                "group_size": self.group_size}
