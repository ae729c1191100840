/* fuzz_config.c — libFuzzer driver for the configuration loader: the input
 * is YAML text fed to pt_config_load_string(). Whatever the bytes, the
 * loader must return a config or errors, never crash, hang or leak.
 * ${ENV} interpolation runs against the fuzzer's real environment. */
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pt_errors errors = {0};
    pt_config *cfg = pt_config_load_string("fuzz.yaml", (const char *)data, size, &errors);
    /* Every message must be a proper C string, and failure must say why. */
    for (size_t i = 0; i < errors.n; i++) (void)strlen(errors.msgs[i]);
    if (!cfg && errors.n == 0) __builtin_trap();
    pt_config_free(cfg);
    pt_errors_free(&errors);
    return 0;
}
