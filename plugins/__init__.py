"""Plugins: stores, transports, the sandbox emulator and integrations (pluggy)."""
