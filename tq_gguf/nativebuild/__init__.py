"""`tq-gguf build`: the pinned sdist (upstream, sdist), the patch series (patches), the content key of a
build (buildkey), the native sources copied into the tree (nativesrc, treesync), compiling and installing
(builder) and how far each backend is tested (backendstatus). Needs only the standard library."""
