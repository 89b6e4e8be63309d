"""Running a model: the `Llama` session (session) with state capture and restore (state), generation and
chat (generate), a bare context for cache edits and eval callbacks (lowlevel), and the OpenAI-compatible
server (serve, server)."""
