# dream_ros: one-command set-up, tests, demo and benchmark.
SHELL := /bin/bash
VENV  := $(CURDIR)/.venv
WS    := $(CURDIR)/.catkin_ws
PY    := $(VENV)/bin/python
GUI   ?= 0

.PHONY: setup test test-core test-ros demo bench clean-ws help

help:
	@echo "make setup   install apt packages, .venv and build the catkin workspace (idempotent)"
	@echo "make demo    simulated robot + camera, calibrated live by dream_node (GUI=1 for rviz)"
	@echo "make test    set up if needed, then pytest (core + ROS integration) and rostest"
	@echo "make bench   per-stage latency and throughput against DREAM's architectures"

setup:
	@bash scripts/setup.sh

test: setup
	@bash scripts/run_tests.sh

demo: setup
	@GUI=$(GUI) bash scripts/demo.sh

bench: setup
	@source scripts/env.sh && python -m dream_ros bench

clean-ws:
	rm -rf $(WS)
