"""The web view's pictures, drawn on the server as inline SVG: pure functions, no I/O.

Drawn here rather than in the browser so that every page shows its pictures without
JavaScript, and a live update is the same drawing sent again. Colours come from the
stylesheet (``st-STATE`` classes): the CSP forbids inline styles, and one palette then
serves the pictures, the tables and the legends alike. Every text that came from a user
or a score (a host name in a tooltip) is escaped; state names come from a fixed set.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

BAR_WIDTH = 600
BAR_HEIGHT = 20
GRID_CELL = 12
GRID_GAP = 2
GRID_COLUMNS = 50
CHART_WIDTH = 600
CHART_HEIGHT = 120
CHART_AXIS = 16  # room under a chart for its labels


def _svg(width: float, height: float, label: str, body: str, kind: str, sizing: str = "") -> Markup:
    """One SVG element, read out as ``label`` by screen readers. Scaled by CSS to the
    width it is given, keeping its proportions, unless ``sizing`` says otherwise: a bar
    stretches to its box, a grid keeps its squares' own size."""
    return Markup(f'<svg class="pic pic-{kind}" viewBox="0 0 {width:g} {height:g}"{sizing} role="img"'
                  f' aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">{body}</svg>')


def stacked_bar(counts: Sequence[tuple[str, int]], label: str = "tasks by state") -> Markup:
    """One horizontal bar split by state, each part as wide as its share; an empty bar
    when there is nothing to count."""
    total = sum(count for _, count in counts)
    parts = ['<rect class="empty" x="0" y="0" width="100%" height="100%"/>']
    x = 0.0
    for state, count in counts:
        if count <= 0 or total == 0:
            continue
        width = BAR_WIDTH * count / total
        parts.append(f'<rect class="st-{state}" x="{x:.2f}" y="0" width="{width:.2f}" height="{BAR_HEIGHT}">'
                     f'<title>{escape(state)}: {count}</title></rect>')
        x += width
    summary = ", ".join(f"{count} {state}" for state, count in counts if count) or "none"
    return _svg(BAR_WIDTH, BAR_HEIGHT, f"{label}: {summary}", "".join(parts), "bar", ' preserveAspectRatio="none"')


def task_grid(cells: Sequence[tuple[str, str]], label: str = "one square per task") -> Markup:
    """One small square per task, in task order, coloured by its state; each square's
    tooltip (an SVG ``<title>``) names its host and state. ``cells`` is (host, state).
    The squares are the element's only children, in task order: a live page recolours
    square N from the task's new state without the drawing being sent again."""
    columns = min(GRID_COLUMNS, max(1, len(cells)))
    rows = max(1, -(-len(cells) // columns))
    step = GRID_CELL + GRID_GAP
    parts = []
    for number, (host, state) in enumerate(cells):
        x, y = (number % columns) * step, (number // columns) * step
        parts.append(f'<rect class="st-{state}" x="{x}" y="{y}" width="{GRID_CELL}" height="{GRID_CELL}" rx="2">'
                     f'<title>{escape(host)}: {escape(state)}</title></rect>')
    width, height = columns * step - GRID_GAP, rows * step - GRID_GAP
    return _svg(width, height, f"{label} ({len(cells)})", "".join(parts), "grid",
                f' id="grid" width="{width}" height="{height}"')


def minute_chart(values: Sequence[int], kind: str, label: str) -> Markup:
    """Vertical bars, one per minute, oldest on the left and the current minute on the
    right, scaled to the largest value (the top is labelled with it)."""
    count = max(1, len(values))
    top = max(values, default=0)
    slot = CHART_WIDTH / count
    parts = [f'<line class="axis" x1="0" y1="{CHART_HEIGHT}" x2="{CHART_WIDTH}" y2="{CHART_HEIGHT}"/>']
    for number, value in enumerate(values):
        if value <= 0:
            continue
        height = (CHART_HEIGHT - 4) * value / top
        ago = count - 1 - number
        when = "this minute" if ago == 0 else f"{ago} min ago"
        parts.append(f'<rect class="{kind}" x="{number * slot + 1:.2f}" y="{CHART_HEIGHT - height:.2f}"'
                     f' width="{max(1.0, slot - 2):.2f}" height="{height:.2f}"><title>{when}: {value}</title></rect>')
    parts.append(f'<text class="label" x="2" y="{CHART_HEIGHT + 12}">{count} min ago</text>')
    parts.append(f'<text class="label end" x="{CHART_WIDTH - 2}" y="{CHART_HEIGHT + 12}">now</text>')
    parts.append(f'<text class="label" x="2" y="11">max {top}/min</text>')
    return _svg(CHART_WIDTH, CHART_HEIGHT + CHART_AXIS, f"{label}: {sum(values)} in the last {count} minutes",
                "".join(parts), "minutes")


def level_bars(levels: Sequence[tuple[str, int]], label: str) -> Markup:
    """One labelled horizontal bar per (name, value), scaled to the largest: how many
    tasks wait in each open state, how many players are in each condition."""
    top = max((value for _, value in levels), default=0)
    row, name_width = 22, 110
    parts = []
    for number, (name, value) in enumerate(levels):
        y = number * row
        width = (BAR_WIDTH - name_width - 60) * value / top if top else 0
        parts.append(f'<text class="label" x="0" y="{y + 15}">{escape(name)}</text>'
                     f'<rect class="st-{escape(name)}" x="{name_width}" y="{y + 3}" width="{width:.2f}"'
                     f' height="16"><title>{escape(name)}: {value}</title></rect>'
                     f'<text class="label" x="{name_width + width + 6:.2f}" y="{y + 15}">{value}</text>')
    return _svg(BAR_WIDTH, max(row, len(levels) * row), label, "".join(parts), "levels")
