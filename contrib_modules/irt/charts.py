"""Item characteristic curves as inline SVG (no file, no plotting library)."""
import html

import numpy

__all__ = ["icc_svg"]

WIDTH, HEIGHT, MARGIN = 640, 360, 44
THETA = numpy.linspace(-4.0, 4.0, 81)


def _x(theta):
    return MARGIN + (theta + 4.0) / 8.0 * (WIDTH - 2 * MARGIN)


def _y(p):
    return HEIGHT - MARGIN - p * (HEIGHT - 2 * MARGIN)


def _colour(discrimination: float, low: float, high: float) -> str:
    """Blue for the least discriminating item, red for the most."""
    share = 0.5 if high <= low else (discrimination - low) / (high - low)
    return f"rgb({int(40 + 200 * share)},80,{int(240 - 200 * share)})"


def icc_svg(items: list[dict]) -> str:
    """Draw ``P(right) = 1 / (1 + exp(-a (theta - b)))`` of each item for theta in [-4, 4].

    :param items: dicts with ``problem_id``, ``difficulty`` and ``discrimination``.
    :returns: an ``<svg>`` element; each curve's tooltip names its problem and parameters.
    """
    slopes = [item["discrimination"] for item in items]
    low, high = min(slopes, default=1.0), max(slopes, default=1.0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="Item characteristic curves">',
             f'<rect x="{MARGIN}" y="{MARGIN}" width="{WIDTH - 2 * MARGIN}" height="{HEIGHT - 2 * MARGIN}" '
             'fill="none" stroke="#999"/>']
    for tick in range(-4, 5, 2):
        parts.append(f'<text x="{_x(tick):.1f}" y="{HEIGHT - MARGIN + 16}" font-size="11" '
                     f'text-anchor="middle">{tick}</text>')
    for tick in (0.0, 0.5, 1.0):
        parts.append(f'<text x="{MARGIN - 6}" y="{_y(tick) + 4:.1f}" font-size="11" text-anchor="end">{tick:g}</text>')
    parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" font-size="12" text-anchor="middle">ability (theta)</text>')
    parts.append(f'<text x="12" y="{HEIGHT / 2}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 12 {HEIGHT / 2})">P(right first attempt)</text>')
    for item in items:
        a, b = item["discrimination"], item["difficulty"]
        p = 1.0 / (1.0 + numpy.exp(-a * (THETA - b)))
        points = " ".join(f"{_x(t):.1f},{_y(q):.1f}" for t, q in zip(THETA, p))
        tip = html.escape(f"{item['problem_id']}: difficulty {b:.2f}, discrimination {a:.2f}")
        parts.append(f'<polyline fill="none" stroke="{_colour(a, low, high)}" stroke-width="1.5" '
                     f'points="{points}"><title>{tip}</title></polyline>')
    parts.append("</svg>")
    return "".join(parts)
