"""A faithful fake of the Synthbrew public API: the demo's data source and the tests' upstream."""

from exporter.simulator.app import SimulatorApp
from exporter.simulator.scenario import Scenario, demo_scenario
from exporter.simulator.world import SimClock, World

__all__ = ["Scenario", "SimClock", "SimulatorApp", "World", "demo_scenario"]
