"""The `vidpulse` command and its tools: what wires the components together.

The command line (tools.cli), the supervisor of `vidpulse run`, `vidpulse forget`, and
the traffic tools (the seeded audience and `vidpulse simulate`). The shared core
(`vidpulse`) and the components (`ingest`, `processors`, `dashboard`) never import
from here.
"""
