"""The LLM engine: sequences, the KV block manager, the scheduler and the llama.cpp runner."""
