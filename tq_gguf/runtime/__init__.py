"""Running a model: the `Llama` session (session) with state capture and restore (state), generation and
chat (generate), a bare context for cache edits and eval callbacks (lowlevel), the OpenAI-compatible
servers (serve and server: llama-cpp-python's; llamaserver: llama.cpp's llama-server as a child process,
childproc) and the address check both make first (ports)."""
