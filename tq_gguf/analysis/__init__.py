"""Measuring caches: the advisor (kvprobe, kvstats, advisor), perplexity and KL divergence (evaluate,
evalbase, evaltext), speed (bench), process memory (memorybench), the kernels against the reference
(verify), what a graph writes into its cache (cachewrites), needle in a haystack (needle, needlerun,
needlereport), and their helpers (llamatool, resultcache, figure)."""
