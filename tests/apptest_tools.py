"""Reading what a page sent to the browser in an AppTest, where Streamlit's testing API has no accessor."""

from __future__ import annotations

import json


def component_data(app, component_name: str) -> list[dict]:
    """The `data` of each mounted st.components.v2 component named `component_name` (JSON data only)."""
    found = []

    def walk(node) -> None:
        children = getattr(node, "children", None)
        for child in (children.values() if isinstance(children, dict) else []):
            proto = getattr(child, "proto", None)
            if getattr(child, "type", None) == "bidi_component" and proto.component_name == component_name:
                found.append(json.loads(proto.json) if proto.json else {})
            walk(child)

    walk(app._tree)
    return found
