"""The Dash dashboard: overview, sentence explorer, the five-stage sentence view, SQL console."""
