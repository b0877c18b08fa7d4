"""The Dash app: a nav bar built from the page registry, and the pages."""

from __future__ import annotations

from pathlib import Path

import dash
from dash import Dash, dcc, html

from dashboard import ids
from dashboard.state import set_warehouse
from warehouse import Warehouse
from warehouse.sandbox import SafeSQL


def create_app(
    warehouse: Warehouse, sandbox: SafeSQL | None = None, model: str | None = None, device: str = "auto"
) -> Dash:
    """The app over ``warehouse``; what-if loads each run's model, or ``model`` for every run."""
    set_warehouse(warehouse, sandbox or SafeSQL(warehouse.root), model, device)
    app = Dash(
        "dashboard",  # the package: Dash then names the pages dashboard.pages.<page>, as imports do
        use_pages=True,
        pages_folder=str(Path(__file__).parent / "pages"),
        title="beamscope",
        suppress_callback_exceptions=True,
    )
    nav = [
        dcc.Link(p["name"], href=p["relative_path"], className="nav-link")
        for p in dash.page_registry.values()
        if p.get("nav", True)
    ]
    app.layout = html.Div(
        [
            html.Div([html.B("beamscope", className="brand"), *nav], className="nav", id=ids.NAV),
            dash.page_container,
        ],
        className="app",
    )
    return app
