/* fuzz_dns_srv.c — libFuzzer driver for the SRV reply parser of net/dns.c
 * (pt_dns_srv_parse: c-ares' ares_parse_srv_reply plus Portico's own walk
 * over the answer records for their TTL). Input: a raw DNS message, handed
 * over in an exactly sized heap copy (so ASan sees a read past its end).
 * Besides crashes, leaks and UB, the driver aborts when the contract of
 * net/dns.h breaks: a parse that succeeds gives 1..PT_DNS_SRV_MAX records,
 * strictly ascending by (host, port, weight), each host non-empty, of
 * lower-case letters, digits, '-', '_', '.' and ':' (an IPv6 address) only,
 * without a trailing dot, each port non-zero; the answer equals
 * itself (pt_dns_srv_same) and a second parse gives the same answer; a
 * failure always says why. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65535) return 0;
    unsigned char *buf = malloc(size ? size : 1);
    if (size) memcpy(buf, data, size);
    pt_arena *a = pt_arena_new(1024);
    pt_dns_srv_answer x, y;
    char err[256] = "";
    bool ok = pt_dns_srv_parse(buf, (int)size, a, &x, err, sizeof(err));
    if (!ok) {
        if (!err[0]) __builtin_trap();
    } else {
        if (x.n < 1 || x.n > PT_DNS_SRV_MAX) __builtin_trap();
        for (uint32_t i = 0; i < x.n; i++) {
            const char *h = x.v[i].host;
            size_t hl = strlen(h);
            if (!hl || h[hl - 1] == '.' || x.v[i].port == 0) __builtin_trap();
            for (size_t k = 0; k < hl; k++)
                if (!((h[k] >= 'a' && h[k] <= 'z') || (h[k] >= '0' && h[k] <= '9') || h[k] == '-' || h[k] == '_' ||
                      h[k] == '.' || h[k] == ':'))
                    __builtin_trap();
            if (i) {
                int c = strcmp(x.v[i - 1].host, h);
                if (c > 0) __builtin_trap();
                if (c == 0 && x.v[i - 1].port > x.v[i].port) __builtin_trap();
                if (c == 0 && x.v[i - 1].port == x.v[i].port && x.v[i - 1].weight >= x.v[i].weight) __builtin_trap();
            }
        }
        if (!pt_dns_srv_same(&x, &x)) __builtin_trap();
        char err2[256];
        if (!pt_dns_srv_parse(buf, (int)size, a, &y, err2, sizeof(err2)) || !pt_dns_srv_same(&x, &y) ||
            x.ttl_s != y.ttl_s || x.priority != y.priority)
            __builtin_trap();
    }
    pt_arena_free(a);
    free(buf);
    return 0;
}
