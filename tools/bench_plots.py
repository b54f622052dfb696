#!/usr/bin/env python3
"""Draws the plots of `mnemo bench multiturn` from DIR/result.json.

Usage: tools/bench_plots.py DIR

Writes into DIR:
  ttft_by_turn.png    TTFT p50 by turn index, one line per mode
  prefill_tokens.png  cumulative prefill tokens computed by turn index, one line per mode
  tier_occupancy.png  bytes held per tier over time, one panel per mode that has samples
  cost.png            cost per 1000 conversations vs think time (log x), one line per mode

Exit status: 0 on success, 1 on a bad command line, 2 on a missing or invalid result.json,
3 when matplotlib is not installed.
"""

import json
import math
import os
import sys

TIERS = (("device_bytes", "device"), ("host_bytes", "host"), ("disk_bytes", "disk"))


class ResultError(Exception):
    pass


def fail(code, message):
    print(f"bench_plots: {message}", file=sys.stderr)
    sys.exit(code)


def load_result(path):
    try:
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
    except FileNotFoundError:
        raise ResultError(f"{path}: no such file (run `mnemo bench multiturn` first)")
    except (OSError, UnicodeDecodeError) as e:
        raise ResultError(f"{path}: cannot read: {e}")
    except json.JSONDecodeError as e:
        raise ResultError(f"{path}: invalid JSON: {e}")
    if not isinstance(result, dict):
        raise ResultError(f"{path}: expected a JSON object at the top level")
    for key, kind in (("modes", list), ("cost_vs_think", dict)):
        if not isinstance(result.get(key), kind):
            raise ResultError(f"{path}: missing or malformed \"{key}\"")
    for i, mode in enumerate(result["modes"]):
        if not isinstance(mode, dict) or not isinstance(mode.get("label"), str):
            raise ResultError(f"{path}: modes[{i}] has no \"label\"")
        for key in ("ttft_by_turn", "computed_by_turn_cumulative"):
            if not isinstance(mode.get(key), list):
                raise ResultError(f"{path}: modes[{i}] has no list \"{key}\"")
        if not isinstance(mode.get("samples"), dict):
            raise ResultError(f"{path}: modes[{i}] has no \"samples\"")
    cvt = result["cost_vs_think"]
    if not isinstance(cvt.get("think_seconds"), list) or not isinstance(cvt.get("modes"), list):
        raise ResultError(f"{path}: \"cost_vs_think\" needs \"think_seconds\" and \"modes\"")
    return result


def number(v):
    """A JSON number, or NaN for null (matplotlib leaves a gap)."""
    return float(v) if isinstance(v, (int, float)) else math.nan


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def finish_lines(plt, fig, ax, result, path, xlabel, ylabel, title):
    """Labels, grid and legend of a one-line-per-mode plot; saves and closes it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if result["modes"]:
        ax.legend()
    save(fig, path)
    plt.close(fig)


def plot_ttft(plt, result, path):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode in result["modes"]:
        by_turn = mode["ttft_by_turn"]
        turns = [q.get("turn", i) for i, q in enumerate(by_turn)]
        p50 = [number(q.get("p50")) * 1000 for q in by_turn]
        if turns:
            ax.plot(turns, p50, marker="o", markersize=3, label=mode["label"])
    finish_lines(plt, fig, ax, result, path, "turn index", "TTFT p50 (ms)",
                 "Time to first token by turn")


def plot_prefill(plt, result, path):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode in result["modes"]:
        cumulative = [number(v) for v in mode["computed_by_turn_cumulative"]]
        if cumulative:
            ax.plot(range(len(cumulative)), cumulative, marker="o", markersize=3,
                    label=mode["label"])
    finish_lines(plt, fig, ax, result, path, "turn index", "prefill tokens computed (cumulative)",
                 "Prefill work through the conversations")


def plot_tiers(plt, result, path):
    sampled = [m for m in result["modes"] if m["samples"].get("seconds")]
    if not sampled:
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.text(0.5, 0.5, "no tier samples in this run", ha="center", va="center")
        ax.set_axis_off()
        save(fig, path)
        plt.close(fig)
        return
    fig, axes = plt.subplots(len(sampled), 1, figsize=(7, 2.8 * len(sampled)), squeeze=False)
    for ax, mode in zip(axes[:, 0], sampled):
        samples = mode["samples"]
        seconds = [number(v) for v in samples["seconds"]]
        for key, name in TIERS:
            values = samples.get(key) or []
            if len(values) == len(seconds):
                ax.plot(seconds, [number(v) / 2**20 for v in values], label=name)
        ax.set_title(mode["label"])
        ax.set_xlabel("seconds from the run's start")
        ax.set_ylabel("MiB held")
        ax.grid(True, alpha=0.3)
        ax.legend()
    save(fig, path)
    plt.close(fig)


def plot_cost(plt, result, path):
    cvt = result["cost_vs_think"]
    think = [number(t) for t in cvt["think_seconds"]]
    # A log axis cannot show 0: it is drawn at a tenth of the smallest positive think time.
    positive = [t for t in think if t > 0]
    zero_at = min(positive) / 10 if positive else 1.0
    xs = [t if t > 0 else zero_at for t in think]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode in cvt["modes"]:
        costs = [number(v) for v in mode.get("per_1000_conversations", [])]
        if len(costs) == len(xs):
            ax.plot(xs, costs, marker="o", markersize=3, label=mode.get("mode", "?"))
    ax.set_xscale("log")
    ticks = sorted(set(xs))
    ax.set_xticks(ticks)
    ax.set_xticklabels(["0" if t == zero_at and 0 in think else f"{t:g}" for t in ticks])
    mean_think = number(result.get("workload", {}).get("mean_think_seconds"))
    if mean_think > 0:
        ax.axvline(mean_think, color="gray", linestyle="--", linewidth=1,
                   label=f"workload mean think ({mean_think:.1f} s)")
    ax.set_xlabel("think time between turns (s)")
    ax.set_ylabel("cost per 1000 conversations")
    ax.set_title("Cost vs think time")
    ax.grid(True, alpha=0.3, which="both")
    if cvt["modes"]:
        ax.legend()
    save(fig, path)
    plt.close(fig)


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 1
    out_dir = argv[1]
    path = os.path.join(out_dir, "result.json")
    try:
        result = load_result(path)
    except ResultError as e:
        fail(2, str(e))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        fail(3, f"matplotlib is not installed ({e}); install it (Debian: apt-get install "
                "python3-matplotlib, or pip install matplotlib) to draw the plots")
    outputs = (
        ("ttft_by_turn.png", plot_ttft),
        ("prefill_tokens.png", plot_prefill),
        ("tier_occupancy.png", plot_tiers),
        ("cost.png", plot_cost),
    )
    for name, draw in outputs:
        target = os.path.join(out_dir, name)
        try:
            draw(plt, result, target)
        except (KeyError, TypeError, ValueError) as e:
            fail(2, f"{path}: unexpected content while drawing {name}: {e!r}")
        except OSError as e:
            fail(2, f"{target}: cannot write: {e}")
    print(f"bench_plots: wrote {', '.join(n for n, _ in outputs)} into {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
