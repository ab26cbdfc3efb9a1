"""Teacher LLM runtime: clients, structured output, cache, rate limits, ledger, runner, loopback server."""
