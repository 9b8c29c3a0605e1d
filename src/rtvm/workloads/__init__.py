"""Workloads: the RT request/response client and server, heavy TCP senders and receivers."""
