"""Istio configuration: kinds, YAML loading with source lines, validation, and the immutable config model."""
