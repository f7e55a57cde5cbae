"""What a compare writes: a markdown report (setup, each method's best point at each budget, who wins and by
how much, hypervolumes), a CSV of every point, and a Pareto plot of every method."""

from __future__ import annotations

import csv
import io
import platform
from pathlib import Path

import torch

from ..evaluation import EvaluationSettings
from ..families import ADHERENCE, FIDELITY, SECOND_JUDGE, SSIM, Family, mean
from ..files import write_atomic
from ..search.prepared import claim_rules_for
from ..verdict import Claim, ClaimRules
from .budgets import BudgetResult, Point, pareto
from .methods import OUR_METHODS
from .runner import CompareResult

# Okabe–Ito: distinguishable with every common colour-vision deficiency; cycled with line styles beyond 8.
PALETTE = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")
STYLES = ("-", "--", ":", "-.")


def hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def write_report(result: CompareResult) -> list[Path]:
    """The report, the CSV and the plot in the compare's folder; returns their paths."""
    out = result.prepared.out
    paths = [
        write_atomic(out / "report.md", report_markdown(result)),
        write_atomic(out / "points.csv", points_csv(result)),
        pareto_plot(result, out / "pareto.png"),
    ]
    return paths


def _point_cells(point: Point | None, result: CompareResult) -> list[str]:
    if point is None:
        return ["-"] * 8
    seconds = result.seconds_per_image.get(point.digest)
    base = result.seconds_per_image.get(result.uncached.digest)
    speed = f"{base / seconds:.2f}×" if seconds and base else "-"
    return [
        point.label,
        f"{point.loss:.4g}",
        _family_mean(point, FIDELITY, "{:.2f}"),
        _family_mean(point, SSIM, "{:.4f}"),
        _family_mean(point, ADHERENCE, "{:.1f}"),
        _family_mean(point, SECOND_JUDGE, "{:.4g}", loss=True),
        f"{point.cost:.1%}",
        f"{seconds * 1000:.1f} ms, {speed}" if seconds else "-",
    ]


def _family_mean(point: Point, family: Family, pattern: str, loss: bool = False) -> str:
    value = mean(family.values(dict(point.figures)))
    if value is None:
        return "-"
    return pattern.format(1 - value if loss else value)


def budget_section(result: BudgetResult, compare: CompareResult) -> str:
    lines = [
        f"### At {result.budget:.0%} of the uncached MACs",
        "",
        "| method | best setting | loss | PSNR (dB) | SSIM | adherence % | second judge loss | MACs "
        "| wall time per image, speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ranked = sorted(result.best.items(), key=lambda item: (item[1] is None, item[1].loss if item[1] else 0.0))
    for method, point in ranked:
        lines.append("| " + " | ".join([method, *_point_cells(point, compare)]) + " |")
    lines += ["", verdict_line(result, claim_rules(compare)), ""]
    return "\n".join(lines)


def claim_rules(result: CompareResult) -> ClaimRules:
    """The rule every verdict of the report follows: primary family what the held-out loss is (the metric's,
    or fidelity for a run that searched for it), margins as the compare was given."""
    return claim_rules_for(result.prepared.held_out, result.prepared.config.margins)


def winner_claim(result: BudgetResult, rules: ClaimRules) -> Claim | None:
    """The claim of the lowest-loss method over the runner-up at this budget (None without both)."""
    if result.winner is None or result.runner_up is None:
        return None
    return rules.judge(dict(result.winner.figures), dict(result.runner_up.figures))


def verdict_line(result: BudgetResult, rules: ClaimRules) -> str:
    """Who has the lowest loss at this budget, and the claim over the runner-up under the rule."""
    if result.winner is None:
        return "No method has a setting this cheap."
    winner = f"**{result.winner.method}** ({result.winner.label})"
    if result.runner_up is None:
        return f"{winner} is the only method with a setting this cheap."
    margin = result.runner_up.loss - result.winner.loss
    line = f"{winner} has the lowest loss, {margin:.4g} below {result.runner_up.method} ({result.runner_up.label})"
    claim = winner_claim(result, rules)
    if claim is None:
        return line + "; they were not scored on the same images, so no claim."
    figures = "; ".join(f"{f.family} {f.text()}" for f in (claim.primary, *claim.others))
    return line + f": **{claim.verdict}** under the rule ({figures})."


def report_markdown(result: CompareResult) -> str:
    prepared = result.prepared
    held_out = prepared.held_out
    count = sum(len(points) for points in result.points.values())
    lines = [
        f"# Caching methods compared on {prepared.spec.name}",
        "",
        f"- Held-out images: {len(held_out.prompts)} prompts × {held_out.images_per_prompt} seeds "
        f"(from {held_out.seed}), {held_out.steps} steps, guidance {held_out.guidance_scale:g}, "
        f"{held_out.resolution} px. None of them was seen by a search."
        + (f" Learned schedules from run `{prepared.config.run}`." if prepared.config.run else ""),
        f"- Loss: {_loss_name(held_out)} (lower is better). Three families: quality, the search's metric "
        f"`{held_out.metric}`; "
        "fidelity, PSNR and SSIM to the uncached images of the same seeds (torchmetrics); adherence, the share "
        "of images that show the prompt as an independent judge reads it (digits), or CLIP score × 100. "
        "The second judge is the quality loss in features no search tuned on (digits). LPIPS is not reported: "
        "it needs torchvision and downloaded network weights.",
        "- Cost: MACs as a fraction of the uncached run, what actually ran, each policy's own arithmetic "
        "included; a budget has 1 % slack (FORA-2 costs 50.15 % at 20 steps: it computes step 0 as well). "
        "Intervals are paired 95 % bootstrap intervals: over images for PSNR and adherence, over seeds for "
        "set metrics such as Fréchet, over prompts for other per-image metrics. "
        f"Wall time per image: the median of {prepared.config.timing_repeats} interleaved rounds on "
        f"the first prompts, on {hardware()}.",
        f"- {count} settings of {len(result.points)} methods; {result.evaluated} evaluated now, the rest from "
        "the database.",
        "",
        "## Best point of each method at each budget",
        "",
    ]
    lines += [budget_section(budget, result) for budget in result.budgets]
    lines += learned_section(result)
    lines += ["## Hypervolume", "", "| method | hypervolume | settings |", "|---|---|---|"]
    for method, volume in sorted(result.hypervolumes.items(), key=lambda item: -item[1]):
        lines.append(f"| {method} | {volume:.4g} | {len(result.points[method])} |")
    lines += [
        "",
        "Dominated area in (MACs fraction, loss) up to one reference point for all methods: cost 1 and 10 % "
        "above the worst loss seen. Larger is better.",
        "",
        "![every method's points](pareto.png)",
        "",
    ]
    return "\n".join(lines)


def learned_section(result: CompareResult) -> list[str]:
    """Each of our methods' best at each budget (learned, constructed, refined) against every other method's
    best there, in every family, with the verdict under the rule; and, beside it, the uncached model's own
    verdict against that method (where it is not "better", a schedule faithful to it cannot be)."""
    rules = claim_rules(result)
    rows = [
        "## Our schedules against every method",
        "",
        rules.text(),
        "",
        "Differences are ours − other on the held-out images (positive favours ours; quality as the lead in loss), "
        "with paired 95 % intervals. The last column judges the uncached model itself against the other method "
        "by the same rule: where it is not better, no schedule that reproduces the uncached images can be.",
        "",
        "| budget | ours | other | quality | fidelity (PSNR) | adherence | second judge | verdict "
        "| uncached vs other |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    found = False
    # The uncached model's verdict against a point: judged once, though the point stands at several budgets
    # and against each of our methods.
    ceilings: dict[tuple[str, str], str] = {}
    for budget in result.budgets:
        for our_method in OUR_METHODS:
            ours = budget.best.get(our_method)
            if ours is None:
                continue
            for method, theirs in sorted(budget.best.items()):
                if method in OUR_METHODS or theirs is None:
                    continue
                found = True
                if (theirs.method, theirs.label) not in ceilings:
                    ceiling = rules.judge(dict(result.uncached.figures), dict(theirs.figures))
                    ceilings[theirs.method, theirs.label] = "-" if ceiling is None else ceiling.verdict
                rows.append(_versus_row(budget.budget, ours, theirs, rules, ceilings[theirs.method, theirs.label]))
    return [*rows, ""] if found else []


def _versus_row(budget: float, ours: Point, theirs: Point, rules: ClaimRules, ceiling: str) -> str:
    claim = rules.judge(dict(ours.figures), dict(theirs.figures))
    cells = {"quality": "-", "fidelity": "-", "adherence": "-"}
    for family in () if claim is None else (claim.primary, *claim.others):
        cells[family.family] = family.text()
    second = rules.second_judge(dict(ours.figures), dict(theirs.figures))
    second_text = "-" if second is None else f"{second.mean:+.3g} [{second.low:+.3g}, {second.high:+.3g}]"
    verdict = "-" if claim is None else claim.verdict
    return (
        f"| {budget:.0%} | {ours.method} ({ours.label}) | {theirs.method} ({theirs.label}) | {cells['quality']} | "
        f"{cells['fidelity']} | {cells['adherence']} | {second_text} | {verdict} | {ceiling} |"
    )


def points_csv(result: CompareResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", "setting", "digest", "macs_fraction", "loss", "psnr_db", "ssim", "macs"])
    rows = [result.uncached, *(p for points in result.points.values() for p in points)]
    for p in rows:
        writer.writerow(
            [p.method, p.label, p.digest, f"{p.cost:.6g}", f"{p.loss:.6g}", p.figures.get("psnr_db", ""),
             p.figures.get("ssim", ""), p.figures.get("macs", "")]
        )  # fmt: skip
    return buffer.getvalue()


def _loss_range(result: CompareResult) -> tuple[float, float]:
    """The losses worth seeing: FORA's (the reference every method is read against), each method's best at
    each budget where that is within twice FORA's worst, and the uncached run's, with a margin. Settings that
    break the model (losses many times larger) would flatten everything else; they stay in the CSV and the
    report."""
    fora = [p.loss for p in result.points.get("fora", [])]
    best = [p.loss for budget in result.budgets for p in budget.best.values() if p is not None]
    ceiling = 2 * max(fora) if fora and max(fora) > 0 else float("inf")
    shown = [*fora, result.uncached.loss, *(loss for loss in best if loss <= ceiling)]
    low, high = min(shown), max(shown)
    margin = 0.1 * (high - low) or 1.0
    return low - margin, high + margin


def _loss_name(held_out: EvaluationSettings) -> str:
    return "fidelity: 1 - PSNR / 100 dB" if held_out.objective == "fidelity" else held_out.metric


def pareto_plot(result: CompareResult, path: Path) -> Path:
    """Loss against MACs: the learned front as a line, each policy as a line through its sweep (its
    non-dominated points), FORA as points; the loss axis spans what matters at the budgets."""
    from ..plots import cost_loss_figure, save_plot

    fig, ax = cost_loss_figure(
        f"{result.prepared.spec.name}: every method on held-out images",
        f"held-out loss ({_loss_name(result.prepared.held_out)}, lower is better)",
        "MACs, fraction of uncached (what ran, overhead included)",
        size=(7.5, 4.8),
    )
    for index, (method, points) in enumerate(sorted(result.points.items())):
        colour, style = PALETTE[index % len(PALETTE)], STYLES[(index // len(PALETTE)) % len(STYLES)]
        if method == "fora":
            ax.plot([p.cost for p in points], [p.loss for p in points], "D", color=colour, label="FORA-N")
            continue
        front = pareto(points)
        width = 2.4 if method in OUR_METHODS else 1.2
        ax.plot([p.cost for p in front], [p.loss for p in front], style, marker="o", markersize=3, color=colour,
                linewidth=width, label=method)  # fmt: skip
    for budget in result.prepared.config.budgets:
        ax.axvline(budget, color="#999999", linewidth=0.6, linestyle=":")
    low, high = _loss_range(result)
    ax.set_ylim(low, high)
    return save_plot(fig, ax, path, legend_columns=2)
