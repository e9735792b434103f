"""Running the simulator inside the current event loop."""

from __future__ import annotations

from collections.abc import Callable

from exporter.httpserver import address, bind, make_server, on_stop_signals
from exporter.simulator.app import SimulatorApp


async def serve_simulator(
    sim: SimulatorApp, listen: str, announce: Callable[[str], object] = print
) -> None:
    sock = bind(listen)
    url = f"http://{address(sock)}"
    announce(f"simulator: {url}/api  (any x-api-key starting with sb_api_)")
    for project in sim.world.projects():
        for source in project.sources:
            announce(f"  project {project.name} {project.id}  source {source.name} {source.id}")
    server = make_server(sim.app)
    on_stop_signals(lambda: setattr(server, "should_exit", True))
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
