"""``saga graph``: a flow's compiled state machine as a diagram."""

from __future__ import annotations

from ..language.compiler import compile_flow
from ..language.loader import load_flow

__all__ = ["draw_flow"]


def draw_flow(flow_path: str, fmt: str) -> str:
    """The compiled state machine of the flow at ``flow_path`` as a Mermaid
    ``stateDiagram-v2`` (``fmt="mermaid"``) or Graphviz DOT (``fmt="dot"``) text."""
    from ..language.graph import render  # only when drawing

    return render(compile_flow(load_flow(flow_path)), fmt)
