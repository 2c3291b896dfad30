"""Adapters the composition root uses to satisfy the ports of delivery and services with net drivers."""
