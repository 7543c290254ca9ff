"""Charts for views: matplotlib figures without pyplot's global state, turned into PNG bytes.

    from sandbox.charts import count_chart, png

    figure, axes = count_chart(7, 4)
    axes.bar(days, counts, label="learners")
    with fs.open("chart.png", "wb") as handle:
        handle.write(png(figure, axes, "Learners per day"))
    return f'<img src="{fs.get_url("chart.png")}">'
"""
from __future__ import annotations

import io

__all__ = ["count_chart", "png"]


def count_chart(width: float, height: float, dpi: int = 100):
    """A new figure of ``width`` x ``height`` inches with one set of axes, for counts.

    pyplot is not used, so charts drawn by different calls never share a figure.

    :returns: ``(figure, axes)``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def png(figure, axes, title: str, counts_on: str = "y", legend: bool = True) -> bytes:
    """Finish a chart of counts (a title, whole-number ticks on the counting axis, a legend)
    and render it.

    :param counts_on: ``"x"`` or ``"y"``: the axis that counts.
    :returns: the PNG bytes.
    """
    from matplotlib.ticker import MaxNLocator
    getattr(axes, f"{counts_on}axis").set_major_locator(MaxNLocator(integer=True))
    axes.set_title(title)
    if legend:
        axes.legend(fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.canvas.print_png(buffer)
    return buffer.getvalue()
