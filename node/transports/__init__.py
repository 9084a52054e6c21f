"""Transports: in-memory, MQTT, TCP."""
