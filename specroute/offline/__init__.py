"""Offline steps that make the router's artifacts: task detection (`detect`), the classifier's
training (`classifier`) and drafter assignment by measurement (`assign`).

The online side (`router/`) only loads what these write: the task artifact (`router.detect.load_tasks`)
and the routing table (`router.assign.RoutingTable`).
"""
