"""Depot: package repositories and fleet inventory, speaking Repomanager's HTTP API v2."""
