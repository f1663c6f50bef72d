/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the PROXY protocol parser (lib/proxy_proto.c), which
 * reads the first bytes of every connection a listener with
 * tether_listen_opts::proxy_protocol accepts.
 *
 * Input layout: byte 0 bits 0-1 are the versions accepted (0 counts as
 * both); the rest is what the peer sends. Invariants: a complete header
 * is no longer than the input nor than the limits (107 bytes for v1,
 * 16 + 4096 for v2); every shorter prefix of it asks for more (so a
 * receiver that consumes what it has never eats bytes after the header,
 * and never fails a header that is merely incomplete); a header asking
 * for more leaves a prefix of the same answer; an error has a code and a
 * message; the TLVs of a complete v2 header lie inside it; and a parsed
 * IPv4 or IPv6 address pair encodes and parses back to the same
 * addresses in both versions. Any broken invariant aborts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy_proto.h"

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family) {
        return false;
    }
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
}

static bool is_v4_mapped(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET6 &&
           IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)ss)->sin6_addr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    unsigned accept = data[0] & 3u;
    if (accept == 0) {
        accept = TETHER__PP_V1 | TETHER__PP_V2;
    }
    const uint8_t *in = data + 1;
    size_t len = size - 1;
    struct tether__pp_result r;
    char why[TETHER_ERROR_MSG_MAX];
    int rv = tether__pp_parse(in, len, accept, &r, why, sizeof why);
    if (rv < 0) {
        FUZZ_CHECK(rv == TETHER_EPROTO || rv == TETHER_EMSGSIZE);
        FUZZ_CHECK(why[0] != '\0');
        return 0;
    }
    if (rv == 0) {
        FUZZ_CHECK(len < TETHER__PP_MAX);
        return 0;
    }
    size_t n = (size_t)rv;
    FUZZ_CHECK(n <= len);
    FUZZ_CHECK(r.version == 1 || r.version == 2);
    FUZZ_CHECK(n <= (r.version == 1 ? TETHER__PP_V1_MAX : TETHER__PP_MAX));
    FUZZ_CHECK(!(r.local && r.has_addr));
    if (r.tlv_len > 0) {
        FUZZ_CHECK(r.version == 2);
        FUZZ_CHECK(r.tlv >= in && r.tlv + r.tlv_len <= in + n);
    }
    /* Every prefix asks for more; check a handful, the last bytes first. */
    for (size_t i = n; i-- > 0 && n - i <= 8;) {
        struct tether__pp_result p;
        FUZZ_CHECK(tether__pp_parse(in, i, accept, &p, why, sizeof why) == 0);
    }
    for (size_t i = 0; i < n && i < 20; i++) {
        struct tether__pp_result p;
        FUZZ_CHECK(tether__pp_parse(in, i, accept, &p, why, sizeof why) == 0);
    }
    /* Round trip through the encoder. */
    if (r.has_addr && (r.src.ss_family == AF_INET || r.src.ss_family == AF_INET6) &&
        !is_v4_mapped(&r.src) && !is_v4_mapped(&r.dst)) {
        for (int v = 1; v <= 2; v++) {
            uint8_t buf[256];
            int e = tether__pp_encode(buf, sizeof buf, v, (const struct sockaddr *)&r.src,
                                      (const struct sockaddr *)&r.dst);
            FUZZ_CHECK(e > 0);
            struct tether__pp_result back;
            FUZZ_CHECK(tether__pp_parse(buf, (size_t)e, TETHER__PP_V1 | TETHER__PP_V2, &back, why,
                                        sizeof why) == e);
            FUZZ_CHECK(back.has_addr && same_addr(&back.src, &r.src) &&
                       same_addr(&back.dst, &r.dst));
        }
    }
    return 0;
}
