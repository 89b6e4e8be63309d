"""The results of tq_gguf.analysis.verify's checks, and the table and JSON `tq-gguf verify` prints."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

CHECKS = ("quantize", "dequantize", "dot", "attention", "flash_attn")


@dataclass(frozen=True)
class Result:
    backend: str
    variant: str
    qtype: str
    check: str
    status: str  # "exact", "ok" (within tolerance), "FAIL", "n/a" (no entry point) or "skipped"
    rows: int = 0  # rows, dot products or attention outputs compared
    worst: float | None = None  # largest |error| / tolerance (dot, attention)
    detail: str = ""


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r.status == "FAIL"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        return {"ok": self.ok, "results": [asdict(r) for r in self.results], "inputs": self.inputs,
                "notes": self.notes}

    def table_lines(self) -> list[str]:
        cells: dict[tuple[str, str, str], dict[str, str]] = {}
        for r in self.results:
            text = r.status
            if r.status == "ok" and r.worst is not None:
                text = f"ok {r.worst:.2g}"
            cells.setdefault((r.backend, r.variant, r.qtype), {})[r.check] = text
        lines = [(f"{'backend':<10} {'variant':<10} {'type':<7} " + " ".join(f"{c:<11}" for c in CHECKS)).rstrip()]
        for (backend, variant, qtype), row in cells.items():
            lines.append(f"{backend:<10} {variant:<10} {qtype:<7} "
                         + " ".join(f"{row.get(c, '-'):<11}" for c in CHECKS).rstrip())
        lines.append("")
        lines.append("exact: bit-identical to the reference; ok X: within tolerance, worst error X of it")
        lines += [f"inputs: {i}" for i in self.inputs]
        lines += [f"note: {n}" for n in self.notes]
        for r in self.results:
            if r.status in ("FAIL", "skipped") or (r.status in ("ok", "exact") and r.detail):
                lines.append(f"{r.status}: {r.backend} {r.variant} {r.qtype} {r.check}: {r.detail}")
        return lines
