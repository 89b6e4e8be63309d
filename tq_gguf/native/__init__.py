"""The installed native build: ggml through one cffi instance and one library handle (ggml), the cache
type ids it has (typeids), llama_cpp imported only after the stale-build check (llamacpp), single ops on
any backend (backendops), llama.cpp's log (llamalog) and its tools' logs (toollog), rpc-servers checked over
ggml's RPC protocol (rpcwire) and made devices for a model (rpcdevices), and what `tq-gguf info` reports
(report)."""
