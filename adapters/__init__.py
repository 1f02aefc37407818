"""Runtime drivers: threads, asyncio, trio and the command line."""
