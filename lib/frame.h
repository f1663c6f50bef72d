/* SPDX-License-Identifier: MIT */
/* Internal side of the framing layer (see include/tether/framing.h). */
#ifndef TETHER_FRAME_H
#define TETHER_FRAME_H

#include "internal.h"

/* The largest value tether_conn_opts::max_msg may take. */
#define TETHER__MAX_MSG_LIMIT ((size_t)1 << 30)

/* Control frames of the default framing. A len32 header whose first byte is
 * 0xFF cannot announce a legal data message (that would be at least
 * 0xFF000000 bytes, far above TETHER__MAX_MSG_LIMIT), so the library reserves
 * it: 0xFF, a control type (1..255), then a 16-bit big-endian control payload
 * length. Connections recognise them in conn_read.c (ctrl_frame_len(),
 * which also checks that the peer may send that type now; liveness.c
 * handles them) before the plain len32 framer would report such a header
 * as EMSGSIZE, so a peer that never enabled control frames sees nothing
 * new on the wire. */
#define TETHER__CTRL_MARK 0xFFu
#define TETHER__CTRL_HDR_LEN 4u
#define TETHER__CTRL_MAX_PAYLOAD 0xFFFFu

/* Control frame types (the wire format is documented in tether/conn.h). */
#define TETHER__CTRL_HELLO 1u
#define TETHER__CTRL_PING 2u
#define TETHER__CTRL_PONG 3u
#define TETHER__CTRL_GOAWAY 4u
#define TETHER__CTRL_HELLO_LEN 6u /* version, flags, interval (be32) */
#define TETHER__CTRL_HELLO_VERSION 1u
#define TETHER__CTRL_PING_MAX 64u         /* largest PING payload answered */
#define TETHER__CTRL_GOAWAY_MIN 3u        /* flags, reason (be16); then the text */
#define TETHER__CTRL_GOAWAY_TEXT_MAX 200u /* longest text tether sends or shows */

/* GOAWAY reason codes (wire values; documented in tether/conn.h). */
#define TETHER__GOAWAY_NONE 0u
#define TETHER__GOAWAY_IDLE 1u
#define TETHER__GOAWAY_FRAME 2u
#define TETHER__GOAWAY_WRITE 3u
#define TETHER__GOAWAY_HEARTBEAT 4u
#define TETHER__GOAWAY_MAX_AGE 5u
#define TETHER__GOAWAY_SHUTDOWN 6u

/* GOAWAY flags (drain.c; documented in tether/conn.h). */
#define TETHER__GOAWAY_F_DRAIN 0x01u /* drain: finish, then close (not "closing now") */
#define TETHER__GOAWAY_F_DONE 0x02u  /* with DRAIN: no data message follows from the sender */

/* The largest heartbeat interval a peer's HELLO can impose (5 min). */
#define TETHER__HB_PEER_MAX_MS 300000u

/* len32 with control frames as a framer of their own: the reference
 * decoder that test_framing and the fuzzer exercise. Connections do not use
 * it (see above). */
const tether_framer *tether__framer_len32_ctrl(void);

/* Encodes a control frame header (4 bytes) for the len32 framing. */
void tether__len32_ctrl_header(uint8_t hdr[4], uint8_t type, uint16_t payload_len);

/* A line framer owns its delimiter; it is embedded in the shared connection
 * configuration, so every connection from one listener uses one instance. */
typedef struct tether__line_framer {
    tether_framer base; /* must be first */
    uint8_t delim[8];
    size_t delim_len;
} tether__line_framer;

/* Initialises a line framer; delim_len must be 1..8. Returns TETHER_EINVAL
 * otherwise. */
int tether__line_framer_init(tether__line_framer *lf, const uint8_t *delim, size_t delim_len);

/* Fast-path helpers for the default framing, inlined in the hot paths. */
static inline void tether__put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline uint32_t tether__get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

#endif /* TETHER_FRAME_H */
