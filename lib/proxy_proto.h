/* SPDX-License-Identifier: MIT */
/* The PROXY protocol (HAProxy's doc/proxy-protocol.txt, versions 1 and 2)
 * as pure functions on byte buffers: a parser that says how many bytes
 * the header takes (or that it needs more, or why it is malformed) and an
 * encoder. No sockets here; conn_proxy.c does the I/O. */
#ifndef TETHER_PROXY_PROTO_H
#define TETHER_PROXY_PROTO_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "internal.h"

/* Version 1: the longest line, CRLF included (spec section 2.1). */
#define TETHER__PP_V1_MAX 107u
/* Version 2: the fixed part, and the largest address+TLV block we accept
 * (the spec allows up to 65535; HAProxy's own headers stay far below). */
#define TETHER__PP_V2_HDR 16u
#define TETHER__PP_V2_MAX_LEN 4096u
/* The most a header can take with our limits. */
#define TETHER__PP_MAX (TETHER__PP_V2_HDR + TETHER__PP_V2_MAX_LEN)

/* Which versions a listener accepts, or a dialler sends (one of them). */
#define TETHER__PP_V1 0x1u
#define TETHER__PP_V2 0x2u

/* What a parsed header says. For LOCAL (v2) and UNKNOWN (v1), and for v2
 * headers whose family or transport we do not use, has_addr is false and
 * the connection's real endpoints stand. */
struct tether__pp_result {
    uint8_t version;  /* 1 or 2 */
    bool local;       /* v2 LOCAL command */
    bool has_addr;    /* src and dst carry the original endpoints */
    uint8_t family;   /* v2: 0 unspec, 1 inet, 2 inet6, 3 unix; v1: 1, 2 or 0 */
    uint8_t protocol; /* v2: 0 unspec, 1 stream, 2 dgram; v1: 1 */
    struct sockaddr_storage src;
    socklen_t src_len;
    struct sockaddr_storage dst;
    socklen_t dst_len;
    /* v2: the TLV block (after the addresses) within the parsed buffer;
     * valid only while that buffer is. */
    const uint8_t *tlv;
    size_t tlv_len;
};

/* Parses the header at the start of buf[0..len).
 *
 * Returns the header's length in bytes (> 0) when it is complete and
 * valid, 0 when every byte so far may belong to a valid header and more
 * are needed (then all of buf is header: a caller may consume it), or a
 * negative TETHER_E* code when it is malformed, with a detail naming the
 * cause in why (at least 128 bytes): TETHER_EPROTO for a bad signature,
 * version, command, family, address, port, TLV or checksum,
 * TETHER_EMSGSIZE for a v1 line without CRLF within 107 bytes or a v2
 * block above TETHER__PP_V2_MAX_LEN. accept is TETHER__PP_V1 and/or
 * TETHER__PP_V2: a header of the other version is refused. */
int tether__pp_parse(const uint8_t *buf, size_t len, unsigned accept, struct tether__pp_result *out,
                     char *why, size_t why_len);

/* Looks up a TLV of the given type in a v2 TLV block (already checked by
 * the parser). Returns true and the value when found. */
bool tether__pp_tlv_find(const uint8_t *tlv, size_t tlv_len, uint8_t type, const uint8_t **val,
                         size_t *val_len);

/* Encodes a header announcing src -> dst (AF_INET or AF_INET6, both the
 * same family; an IPv4-mapped IPv6 pair is sent as IPv4). version is 1 or
 * 2. With src NULL the header says "unknown" (v1 UNKNOWN, v2 PROXY with
 * an unspecified family and no address).
 * Returns the length written, or a negative TETHER_E* code (TETHER_EINVAL
 * for mixed or unsupported families, TETHER_ENOMEM if cap is too small:
 * 232 bytes always suffice). */
int tether__pp_encode(uint8_t *buf, size_t cap, int version, const struct sockaddr *src,
                      const struct sockaddr *dst);

/* CRC32C (Castagnoli, RFC 4960 appendix B) of a buffer. */
uint32_t tether__pp_crc32c(const uint8_t *buf, size_t len);

#endif /* TETHER_PROXY_PROTO_H */
