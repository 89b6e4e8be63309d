// Build identity of the tq-gguf patched ggml (see ggml-tq.h).
#include "ggml-tq.h"
#include "tq-build-id.h"

const char * ggml_tq_build_id(void) {
    return TQ_BUILD_ID;
}

int ggml_tq_type_count(void) {
    return GGML_TYPE_COUNT;
}
