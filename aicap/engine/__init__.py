"""The LLM engine, one concept per file: sequence, block_manager, scheduler, cells (llama.cpp seq ids),
model_runner (llama.cpp), sampler, llm_engine (one step), generation and async_engine (a request's
queue and the inference thread), tokenizer."""
