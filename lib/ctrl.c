/* SPDX-License-Identifier: MIT */
/* Control frames on len32 connections: HELLO (capabilities and the
 * heartbeat interval), PING/PONG, GOAWAY, and the CALL/REPLY and
 * ACK/RESUME frames that call.c and ack.c handle: queueing them, telling
 * a control frame from a data header, the protocol errors, and dispatch
 * of each received frame. What heartbeats and timeouts do with them is
 * liveness.c's.
 *
 * The wire format and the rules are documented in tether/conn.h, section
 * "Heartbeat wire format". Control frames are rare, so nothing here is on
 * a per-message path: the fast len32 parser only comes here for a header
 * that no data message can have. */
#include "ack.h"
#include "conn_core.h"
#include "delivery.h"
#include "ws.h"

#include <string.h>

#define CTRL_PAYLOAD_MAX (TETHER__CTRL_GOAWAY_MIN + TETHER__CTRL_GOAWAY_TEXT_MAX)
static_assert(CTRL_PAYLOAD_MAX >= TETHER__CTRL_PING_MAX, "control frame buffer");

/* Queues a control frame behind whatever is queued already (always at a
 * frame boundary: the queue only ever holds whole frames). */
int tether__ctrl_queue(tether_conn *c, uint8_t type, const uint8_t *payload, size_t n)
{
    uint8_t buf[TETHER__CTRL_HDR_LEN + CTRL_PAYLOAD_MAX];
    assert(n <= CTRL_PAYLOAD_MAX);
    tether__len32_ctrl_header(buf, type, (uint16_t)n);
    if (n > 0) {
        memcpy(buf + TETHER__CTRL_HDR_LEN, payload, n);
    }
    struct iovec iov = {buf, TETHER__CTRL_HDR_LEN + n};
    return tether__wq_append_copy(c, &iov, 1, iov.iov_len);
}

int tether__ctrl_queue_hello(tether_conn *c)
{
    uint8_t p[TETHER__CTRL_HELLO_LEN];
    p[0] = TETHER__CTRL_HELLO_VERSION;
    p[1] = tether__call_hello_flags(c) | tether__ack_hello_flags(c); /* capability bits */
    tether__put_be32(p + 2, (uint32_t)c->cfg->o.heartbeat_ms);
    int rv = tether__ctrl_queue(c, TETHER__CTRL_HELLO, p, sizeof p);
    if (rv == TETHER_OK) {
        c->flags |= TETHER__CF_HELLO_SENT;
    }
    return rv;
}

/* Both sides speak control frames: we sent HELLO and received the peer's. */
bool tether__ctrl_negotiated(const tether_conn *c)
{
    return (c->flags & (TETHER__CF_HELLO_SENT | TETHER__CF_PEER_HELLO)) ==
           (TETHER__CF_HELLO_SENT | TETHER__CF_PEER_HELLO);
}

size_t tether__ctrl_frame_len(const tether_conn *c, const uint8_t *hdr)
{
    if (hdr[0] != TETHER__CTRL_MARK) {
        return 0;
    }
    switch (hdr[1]) {
    case TETHER__CTRL_HELLO:
        if (c->flags & TETHER__CF_PEER_HELLO) {
            return 0;
        }
        break;
    case TETHER__CTRL_PING:
    case TETHER__CTRL_PONG:
    case TETHER__CTRL_GOAWAY:
        if (!(c->flags & TETHER__CF_PEER_HELLO)) {
            return 0;
        }
        break;
    case TETHER__CTRL_CALL:
    case TETHER__CTRL_REPLY:
        if (!tether__call_negotiated(c)) {
            return 0;
        }
        break;
    case TETHER__CTRL_ACK:
    case TETHER__CTRL_RESUME:
        if (!tether__ack_admits(c, hdr[1])) {
            return 0;
        }
        break;
    default:
        return 0;
    }
    return TETHER__CTRL_HDR_LEN + (((size_t)hdr[2] << 8) | (size_t)hdr[3]);
}

static const char *ctrl_type_name(uint8_t type)
{
    switch (type) {
    case TETHER__CTRL_HELLO:
        return "HELLO";
    case TETHER__CTRL_PING:
        return "PING";
    case TETHER__CTRL_PONG:
        return "PONG";
    case TETHER__CTRL_GOAWAY:
        return "GOAWAY";
    case TETHER__CTRL_CALL:
        return "CALL";
    case TETHER__CTRL_REPLY:
        return "REPLY";
    case TETHER__CTRL_ACK:
        return "ACK";
    case TETHER__CTRL_RESUME:
        return "RESUME";
    default:
        return NULL;
    }
}

bool tether__ctrl_violation(tether_conn *c, const uint8_t *hdr)
{
    if (hdr[0] != TETHER__CTRL_MARK) {
        return false;
    }
    const char *name = ctrl_type_name(hdr[1]);
    if (name == NULL) {
        /* Only a connection on which a side has spoken control frames
         * knows that 0xFF starts one; to a plain len32 peer an unknown
         * type is just an oversized length. */
        if (!(c->flags & (TETHER__CF_HELLO_SENT | TETHER__CF_PEER_HELLO))) {
            return false;
        }
        tether__conn_fail(c, TETHER_EPROTO,
                          "protocol error: unknown control frame type %u from the peer",
                          (unsigned)hdr[1]);
    } else if (hdr[1] == TETHER__CTRL_HELLO) {
        tether__conn_fail(c, TETHER_EPROTO,
                          "protocol error: the peer sent a second HELLO control frame");
    } else if ((hdr[1] == TETHER__CTRL_CALL || hdr[1] == TETHER__CTRL_REPLY) &&
               (c->flags & TETHER__CF_PEER_HELLO)) {
        tether__conn_fail(c, TETHER_EPROTO,
                          "protocol error: the peer sent a %s control frame, but calls were not "
                          "negotiated (HELLO capability bit 0)",
                          name);
    } else if ((hdr[1] == TETHER__CTRL_ACK || hdr[1] == TETHER__CTRL_RESUME) &&
               (c->flags & TETHER__CF_PEER_HELLO)) {
        tether__conn_fail(c, TETHER_EPROTO,
                          "protocol error: the peer sent a %s control frame, but acknowledgements "
                          "were not negotiated (HELLO capability bit 1)",
                          name);
    } else {
        /* A known type out of order: a peer that speaks control frames
         * broke their rules (a plain peer would have announced more than
         * 4 GiB - 16 MiB, which no connection accepts either). */
        tether__conn_fail(c, TETHER_EPROTO,
                          "protocol error: the peer sent a %s control frame before its HELLO "
                          "(read as a length header: %u bytes, above max_msg %zu)",
                          name, (unsigned)tether__get_be32(hdr), c->cfg->o.max_msg);
    }
    return true;
}

int tether__ctrl_queue_goaway(tether_conn *c, uint8_t flags, uint16_t code, const char *text)
{
    uint8_t p[CTRL_PAYLOAD_MAX];
    size_t tl = text != NULL ? TETHER__MIN(strlen(text), (size_t)TETHER__CTRL_GOAWAY_TEXT_MAX) : 0;
    p[0] = flags;
    p[1] = (uint8_t)(code >> 8);
    p[2] = (uint8_t)code;
    if (tl > 0) {
        memcpy(p + TETHER__CTRL_GOAWAY_MIN, text, tl);
    }
    return tether__ctrl_queue(c, TETHER__CTRL_GOAWAY, p, TETHER__CTRL_GOAWAY_MIN + tl);
}

/* A GOAWAY from the peer: with the drain flag, drain.c takes it (the
 * connection goes on); without, the peer is closing now. Its text becomes
 * our detail; the text is the peer's, so anything but printable ASCII is
 * replaced before it reaches logs and terminals. True when the connection
 * goes on. */
static bool ctrl_on_goaway(tether_conn *c, const uint8_t *p, size_t n)
{
    uint16_t code = (uint16_t)((p[1] << 8) | p[2]);
    size_t tl = TETHER__MIN(n - TETHER__CTRL_GOAWAY_MIN, (size_t)TETHER__CTRL_GOAWAY_TEXT_MAX);
    char text[TETHER__CTRL_GOAWAY_TEXT_MAX + 1];
    for (size_t i = 0; i < tl; i++) {
        uint8_t ch = p[TETHER__CTRL_GOAWAY_MIN + i];
        text[i] = ch >= 0x20 && ch < 0x7F ? (char)ch : '?';
    }
    text[tl] = '\0';
    if (p[0] & TETHER__GOAWAY_F_DRAIN) {
        return tether__drain_on_goaway(c, p[0], code, text);
    }
    if (tl > 0) {
        tether__conn_fail(c, TETHER_EOF, "closed by peer: %s", text);
    } else {
        tether__conn_fail(c, TETHER_EOF, "closed by peer (GOAWAY reason %u)", (unsigned)code);
    }
    return false;
}

/* Handles one complete control frame. Returns false when the connection
 * failed. */
bool tether__ctrl_on_frame(tether_conn *c, const uint8_t *frame, size_t len)
{
    uint8_t type = frame[1];
    const uint8_t *p = frame + TETHER__CTRL_HDR_LEN;
    size_t n = len - TETHER__CTRL_HDR_LEN;
    c->ctrl_in++;
    switch (type) {
    case TETHER__CTRL_HELLO: {
        if (n < TETHER__CTRL_HELLO_LEN || p[0] == 0) {
            tether__conn_fail(c, TETHER_EPROTO,
                              "framing error (len32): malformed HELLO control frame (%zu bytes)",
                              n);
            return false;
        }
        c->flags |= TETHER__CF_PEER_HELLO;
        uint32_t peer_ms = tether__get_be32(p + 2);
        if (!(c->flags & TETHER__CF_HELLO_SENT) && tether__ctrl_queue_hello(c) != TETHER_OK) {
            tether__conn_fail(c, TETHER_ENOMEM, "out of memory answering a HELLO");
            return false;
        }
        if (!tether__call_on_hello(c, p[1]) || !tether__ack_on_hello(c, p[1])) {
            return false;
        }
        tether__live_on_hello(c, peer_ms);
        if (c->cfg->shutdown != NULL && (c->flags & TETHER__CF_ACCEPTED)) {
            tether__shutdown_conn_hello(c); /* its listener is shutting down */
        }
        break;
    }
    case TETHER__CTRL_PING:
        if (n == 0 || n > TETHER__CTRL_PING_MAX) {
            tether__conn_fail(c, TETHER_EPROTO,
                              "framing error (len32): malformed PING control frame (%zu bytes)", n);
            return false;
        }
        /* A peer that pings without reading gets no pongs: they would only
         * pile up in our queue. */
        if (c->queued <= c->cfg->o.send_hwm) {
            if (tether__ctrl_queue(c, TETHER__CTRL_PONG, p, n) != TETHER_OK) {
                tether__conn_fail(c, TETHER_ENOMEM, "out of memory answering a heartbeat");
                return false;
            }
            tether__conn_after_queue(c);
        }
        break;
    case TETHER__CTRL_PONG:
        if (n == 0 || n > TETHER__CTRL_PING_MAX) {
            tether__conn_fail(c, TETHER_EPROTO,
                              "framing error (len32): malformed PONG control frame (%zu bytes)", n);
            return false;
        }
        tether__live_on_pong(c, p, n);
        break;
    case TETHER__CTRL_GOAWAY:
        if (n < TETHER__CTRL_GOAWAY_MIN) {
            tether__conn_fail(c, TETHER_EPROTO,
                              "framing error (len32): malformed GOAWAY control frame (%zu bytes)",
                              n);
            return false;
        }
        if (!ctrl_on_goaway(c, p, n)) {
            return false;
        }
        break;
    case TETHER__CTRL_CALL:
    case TETHER__CTRL_REPLY:
        if (!tether__call_on_ctrl(c, type, p, n)) {
            return false;
        }
        break;
    case TETHER__CTRL_ACK:
    case TETHER__CTRL_RESUME:
        if (!tether__ack_on_ctrl(c, type, p, n)) {
            return false;
        }
        break;
    default:
        break; /* tether__ctrl_frame_len() admits no other type */
    }
    return c->state == TETHER__CS_READY;
}
