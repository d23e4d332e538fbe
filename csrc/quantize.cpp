// Quantizing a GGUF model into another file type (a3s-power create --quantize).

#include "shim.h"

using shim::clear_log_errors;
using shim::fail;
using shim::llama_reason;

extern "C" {

int32_t pw_quantize(const char *src, const char *dst, int32_t ftype, int32_t n_threads) {
    if (!src || !dst) return fail(PW_E_INVALID, "source and destination are required");
    pw_init(nullptr);
    llama_model_quantize_params qp = llama_model_quantize_default_params();
    qp.ftype = (llama_ftype)ftype;
    qp.nthread = n_threads;
    qp.allow_requantize = true;  // the store allows it only to a smaller type (a draft made from its target)
    clear_log_errors();
    uint32_t rc = llama_model_quantize(src, dst, &qp);
    if (rc != 0) return fail(PW_E_LOAD, "quantization failed: %s", llama_reason().c_str());
    return PW_OK;
}

}  // extern "C"
