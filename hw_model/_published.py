"""One published number next to the model's value for it: shared by the kernel and serving predictions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from attnspec.registry import Outcome


@dataclass(frozen=True)
class Published:
    """A published number, the model's prediction of it, and the relative band it must fall in.

    ``kind`` is "prediction" when no constant was fitted to this number, "calibration" when one was.
    """

    name: str
    predicted: float
    published: float
    unit: str
    kind: Literal["prediction", "calibration"]
    source: str
    band: float

    @property
    def ratio(self) -> float:
        return self.predicted / self.published

    @property
    def ok(self) -> bool:
        return abs(self.ratio - 1.0) <= self.band

    def show(self, value: float) -> str:
        """Return ``value`` formatted in this row's unit (fractions as percentages)."""
        if self.unit == "":
            return f"{value:.1%}"
        return f"{value:,.3f}" if self.published < 10 else f"{value:,.1f}"

    def outcome(self) -> Outcome:
        """Return the registry outcome: pass iff the prediction is within the band."""
        return Outcome.from_bool(self.ok, f"{self.name}: predicted {self.show(self.predicted)} {self.unit} vs published "
                                 f"{self.show(self.published)} (ratio {self.ratio:.3f}, band ±{self.band:.0%}, {self.kind})",
                                 {"predicted": self.predicted, "published": self.published, "ratio": self.ratio})


def format_table(rows: list[Published]) -> str:
    """Return the rows as an aligned text table: predicted, published, ratio, band, kind."""
    width = max(len(r.name) for r in rows)
    lines = [f"{'published number':<{width}}  {'predicted':>10}  {'published':>10}  {'unit':<9}  {'ratio':>6}  "
             f"{'band':>5}  kind"]
    for r in rows:
        lines.append(f"{r.name:<{width}}  {r.show(r.predicted):>10}  {r.show(r.published):>10}  {r.unit:<9}  "
                     f"{r.ratio:>6.3f}  ±{r.band:.0%}  {r.kind}{'' if r.ok else '  OUT OF BAND'}")
    return "\n".join(lines)
