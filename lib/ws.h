/* SPDX-License-Identifier: MIT */
/* Internal side of WebSocket (see include/tether/ws.h): the frame codec
 * (ws_frame.c), the HTTP/1.1 upgrade (ws_handshake.c), and the transport
 * layer that puts both between a connection and its TCP or TLS transport
 * (transport_ws.c, ws_stream.c for reading, ws_write.c for writing), plus
 * the few hooks the connection code calls.
 *
 * The layer translates: the connection above writes and reads the len32
 * stream it always does (messages and tether control frames), and the
 * WebSocket transport turns each len32 message into a WebSocket message
 * and back, maps tether PING/PONG control frames onto WebSocket ping and
 * pong, a GOAWAY onto the close code, and answers the peer's control
 * frames. */
#ifndef TETHER_WS_INT_H
#define TETHER_WS_INT_H

#include "conn.h"

#include <sys/uio.h>

#include <tether/ws.h>

/* ---- ws_frame.c: the frame codec -------------------------------------- */

#define TETHER__WS_OP_CONT 0x0u
#define TETHER__WS_OP_TEXT 0x1u
#define TETHER__WS_OP_BINARY 0x2u
#define TETHER__WS_OP_CLOSE 0x8u
#define TETHER__WS_OP_PING 0x9u
#define TETHER__WS_OP_PONG 0xAu

#define TETHER__WS_HDR_MAX 14u     /* 2 + 8 (length) + 4 (mask) */
#define TETHER__WS_CTRL_MAX 125u   /* largest control payload (RFC 6455 5.5) */
#define TETHER__WS_REASON_MAX 123u /* close reason after the 2-byte code */

struct tether__ws_hdr {
    bool fin;
    uint8_t rsv; /* RSV1-3 as bits 2..0 */
    uint8_t opcode;
    bool masked;
    uint8_t mask[4];
    uint64_t len;
    size_t hdr_len;
};

/* Decodes a frame header from p[0..n). Returns TETHER_OK, TETHER_EAGAIN
 * when more bytes are needed, or TETHER_EPROTO (a 64-bit length with the
 * top bit set, or a length not in its shortest form is *not* refused:
 * RFC 6455 5.2 only recommends the minimal encoding). */
int tether__ws_hdr_decode(const uint8_t *p, size_t n, struct tether__ws_hdr *h);

/* Encodes a frame header (FIN set when fin) into out (TETHER__WS_HDR_MAX
 * bytes); mask is NULL for an unmasked frame. Returns the header length. */
size_t tether__ws_hdr_encode(uint8_t *out, bool fin, uint8_t opcode, uint64_t len,
                             const uint8_t *mask);

/* XORs p[0..n) with the mask, starting at byte offset pos of the payload. */
void tether__ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t pos);

/* dst[i] = src[i] masked, as tether__ws_mask() would (dst may not overlap). */
void tether__ws_mask_copy(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t mask[4],
                          uint64_t pos);

/* Incremental UTF-8 validation: state 0 is "between characters". Feeds
 * p[0..n) and returns the new state, or TETHER__UTF8_BAD. */
#define TETHER__UTF8_BAD UINT32_MAX
uint32_t tether__utf8_feed(uint32_t state, const uint8_t *p, size_t n);

/* Close codes an endpoint may send (RFC 6455 7.4.1 and the IANA registry). */
bool tether__ws_code_ok(unsigned code);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA-1(key + GUID)),
 * 28 characters and a NUL. */
int tether__ws_accept_key(const char *key, size_t key_len, char out[29]);

/* ---- ws_handshake.c: the HTTP/1.1 upgrade ----------------------------- */

/* The WebSocket options of a configuration, copied from the user's. */
struct tether__ws_cfg {
    char *origin;
    char **protocols; /* NULL-terminated, or NULL */
    char *headers;
    char **allowed_origins;
    char *health_path;
    bool text;
    size_t max_request;
    int handshake_timeout_ms;
    /* From the URL: the path a client asks for, or the one a listener
     * accepts (any_path: every path); the Host header of a client. */
    char path[TETHER__WS_PATH_MAX + 1];
    bool any_path;
    char host[TETHER__HOST_MAX + 16];
};

/* Builds cfg->ws from cfg->o.ws and the parsed URL; checks that the
 * framing is len32. Fills err on failure. */
int tether__ws_cfg_set(struct tether__conn_cfg *cfg, const struct tether__url *u,
                       tether_error *err);
void tether__ws_cfg_free(struct tether__ws_cfg *w);

/* A deep copy of user options, for holders of a tether_conn_opts that dial
 * later (tether_client); NULL when out of memory. */
tether_ws_opts *tether__ws_opts_dup(const tether_ws_opts *in);
void tether__ws_opts_free(tether_ws_opts *o);

/* The private extension two tether ends agree on in the upgrade: tether's
 * control frames (HELLO, PING, PONG, GOAWAY, CALL, REPLY) then travel
 * inside the WebSocket stream, each as one binary frame with RSV2 set
 * whose payload is the control frame exactly as len32 carries it (0xFF,
 * type, 16-bit length, payload). Other peers never offer or accept it. */
#define TETHER__WS_EXT_CTRL "x-tether-control"
#define TETHER__WS_RSV2 0x2u /* struct tether__ws_hdr::rsv */

/* What a parsed handshake head yields. Strings point into the head. */
struct tether__ws_req {
    const char *path;
    size_t path_len;
    const char *origin;
    size_t origin_len;
    const char *key;
    size_t key_len;
    const char *protocols; /* the client's comma-separated list */
    size_t protocols_len;
    bool tctl; /* the client offered TETHER__WS_EXT_CTRL (and gets it) */
};

/* The client's request head, into a malloc'ed string; key receives the
 * Sec-WebSocket-Key sent (24 characters and a NUL). NULL if out of memory. */
char *tether__ws_client_request(const struct tether__ws_cfg *w, char key[25], size_t *len);

/* Checks the server's response head (head[0..len), ending in the blank
 * line) against the key sent. Returns TETHER_OK with *protocol set to a
 * malloc'ed copy of the subprotocol chosen (or NULL) and *tctl whether
 * the server accepted TETHER__WS_EXT_CTRL, or TETHER_EPROTO with detail
 * filled. */
int tether__ws_client_check(const struct tether__ws_cfg *w, const char *head, size_t len,
                            const char *key, char **protocol, bool *tctl, char *detail,
                            size_t dlen);

/* Parses and checks a client's request head. On success returns 0, fills
 * req and *response (malloc'ed 101 response; *protocol the chosen
 * subprotocol, malloc'ed or NULL). Otherwise returns the HTTP status to
 * answer with (200 for a health check), fills *response with it and
 * detail with what was wrong. Returns -1 when out of memory. */
int tether__ws_server_check(const struct tether__ws_cfg *w, const char *head, size_t len,
                            struct tether__ws_req *req, char **protocol, char **response,
                            size_t *rlen, char *detail, size_t dlen);

/* An HTTP error response for status, malloc'ed. */
char *tether__ws_http_error(int status, size_t *len);

/* ---- transport_ws.c: the layer --------------------------------------- */

/* Wraps c->tr (just created for fd) in the WebSocket layer; on servers
 * arms the handshake deadline. */
int tether__ws_wrap(tether_conn *c, bool server);

/* The connection's timer fired during the handshake: fails it naming
 * the WebSocket phase. Returns false when the WebSocket layer is not the
 * one waiting (the TLS handshake of a client). */
bool tether__ws_handshake_timeout(tether_conn *c);

/* on_message is about to run: the next message's type becomes current. */
void tether__ws_on_deliver(tether_conn *c);

/* A read failed: when it was the peer breaking the protocol, closes the
 * connection gracefully (our close frame is out: flush, FIN, linger) so
 * that the peer reads the close code instead of a reset, and returns
 * true. */
bool tether__ws_read_failed(tether_conn *c, int rv);

/* The transport under the WebSocket layer when tr is one (for the TLS
 * accessors of wss:// connections), else tr itself. */
const struct tether_transport *tether__ws_inner(const struct tether_transport *tr);

/* tether_conn_goaway() on a WebSocket connection: returns true when the
 * peer cannot take a GOAWAY (not a tether peer, or no HELLO exchanged)
 * and the connection is closing with 1001 after its queue instead. */
bool tether__ws_goaway(tether_conn *c, const char *text);

/* The connection closes for a liveness or drain reason (a GOAWAY reason
 * code): our close frame will carry 1001 or 1008 and text, whether or not
 * a GOAWAY can reach the peer. */
void tether__ws_close_reason(tether_conn *c, unsigned reason, const char *text);

/* The peer's end of stream: the detail to report, or NULL. */
const char *tether__ws_eof_detail(tether_conn *c);

/* ---- the layer's state, shared by transport_ws.c (handshake, ops,
 * public calls) and ws_stream.c (buffers and the translation) ---------- */

#define TETHER__WS_IB_CHUNK (64u * 1024u)     /* smallest input read */
#define TETHER__WS_IB_MAX_READ (128u * 1024u) /* largest (the reader's buffer) */
#define TETHER__WS_OB_MAX (256u * 1024u)      /* encoded output accepted ahead of the socket */

enum tether__ws_phase {
    TETHER__WS_INNER,  /* the inner transport's handshake (TLS) */
    TETHER__WS_SEND,   /* client: sending the request; server: sending the 101 */
    TETHER__WS_RECV,   /* client: awaiting the response; server: the request */
    TETHER__WS_REJECT, /* server: sending an HTTP error, then failing */
    TETHER__WS_OPEN,
};

struct ws_transport {
    struct tether_transport base; /* must be first */
    struct tether_transport *in;
    tether_conn *c;
    const struct tether__ws_cfg *cfg;
    bool server;
    bool tctl; /* TETHER__WS_EXT_CTRL agreed: the peer is tether */
    uint8_t phase;
    int fail_rv; /* TETHER__WS_REJECT: the error to return once the answer is out */

    /* Raw input not yet parsed. */
    uint8_t *ib;
    size_t ilen, icap;
    /* Decoded len32 stream waiting for the connection. */
    uint8_t *db;
    size_t doff, dlen, dcap;
    /* A data frame whose payload is still arriving. */
    bool fr_active;
    bool fr_fin;
    uint64_t fr_left;
    uint64_t fr_pos;
    uint8_t fr_mask[4];
    bool fr_masked;
    /* The message under way: its type, fragments (only when fragmented:
     * an unfragmented one streams straight into db) and UTF-8 state. */
    bool in_msg;
    bool msg_frag;
    uint8_t msg_op;
    uint32_t utf8;
    uint8_t *mb;
    size_t mlen, mcap;
    /* The sequence numbers of the text messages among those parsed but
     * not yet delivered, in order, for tether_ws_msg_is_text(): binary
     * messages, the common case, only count (rx_seq, dv_seq). */
    uint32_t *types;
    size_t thead, tcount, tcap;
    uint32_t rx_seq, dv_seq;
    bool cur_text;

    /* Encoded output not yet taken by the inner transport; during
     * writev, the loop's shared buffer (ob_shared, ws_stream.c). */
    uint8_t *ob;
    size_t ooff, olen, ocap;
    bool ob_shared;
    /* Translation of the outgoing len32 stream. */
    uint8_t whdr[4];
    uint8_t whave;
    uint64_t wleft; /* payload bytes of the current item still to come */
    uint64_t wpos;  /* position within a data frame (for the mask) */
    uint8_t wctrl;  /* the tether control frame type in progress, 0: data */
    uint8_t wcbuf[TETHER__CTRL_GOAWAY_MIN + TETHER__CTRL_GOAWAY_TEXT_MAX];
    size_t wclen;
    uint8_t wmask[4];
    bool text;  /* data frames are sent as text */
    bool qtext; /* the mode as of the end of the connection's queue */

    /* The peer's last ping, answered when the connection's PONG passes. */
    uint8_t ping[TETHER__WS_CTRL_MAX];
    size_t ping_len;
    bool ping_due;
    uint8_t ping_seq;

    /* Handshake. */
    char key[25];
    char *path;
    char *origin;
    char *protocol;

    /* Closing. */
    bool close_rx; /* the peer's close frame arrived */
    bool close_tx; /* ours is queued */
    bool eof;      /* the peer's end of stream (or close) was reported */
    bool violated; /* the peer broke the protocol: its input is discarded */
    bool ib_fresh; /* ib holds bytes that came with the handshake, not yet parsed */
    /* While readv parses: its destination, which decoded bytes go to
     * straight (db takes only what does not fit). */
    const struct iovec *siov;
    int siovcnt;
    int sidx;
    size_t soff;
    size_t sgot;
    int rx_code; /* tether_ws_close_code() */
    int tx_code; /* chosen by tether_ws_close() or a GOAWAY; 0: default */
    char tx_reason[TETHER__WS_REASON_MAX + 1];
    char rx_text[TETHER__WS_REASON_MAX + 1];
    char err[TETHER_ERROR_MSG_MAX];
    char eof_detail[TETHER_ERROR_MSG_MAX];
};

/* Private control types the connection's queue carries to the layer only
 * (tether_ws_set_text()); never on the wire. */
#define TETHER__WS_MARK_BINARY 0xF0u
#define TETHER__WS_MARK_TEXT 0xF1u

int tether__ws_buf_reserve(uint8_t **b, size_t *cap, size_t need);
/* Room for n more bytes at the end of ob (olen is not advanced); NULL
 * when out of memory (ws_write.c). */
uint8_t *tether__ws_ob_room_slow(struct ws_transport *t, size_t n);
static inline uint8_t *tether__ws_ob_room(struct ws_transport *t, size_t n)
{
    if (TETHER__LIKELY(t->ob != NULL && t->ooff + t->olen + n <= t->ocap)) {
        return t->ob + t->ooff + t->olen;
    }
    return tether__ws_ob_room_slow(t, n);
}
int tether__ws_ob_add(struct ws_transport *t, const void *p, size_t n);
int tether__ws_db_add(struct ws_transport *t, const void *p, size_t n);
int tether__ws_text_push(struct ws_transport *t);
/* Records the type of a message just parsed. */
static inline int tether__ws_types_push(struct ws_transport *t, bool text)
{
    int rv = text ? tether__ws_text_push(t) : TETHER_OK;
    t->rx_seq++;
    return rv;
}
/* A fresh masking key from the loop's pool of OpenSSL random bytes
 * (ws_write.c). */
void tether__ws_mask_key(struct ws_transport *t, uint8_t key[4]);
/* Queues one whole frame (control frames, the close frame). */
int tether__ws_ob_frame(struct ws_transport *t, uint8_t op, const uint8_t *p, size_t n);
/* Writes what ob holds to the inner transport. */
int tether__ws_ob_flush(struct ws_transport *t);
/* Records the detail of a failure and returns rv. */
int tether__ws_fail(struct ws_transport *t, int rv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A protocol violation by the peer: a close frame with code (best
 * effort), then the failure. */
int tether__ws_violation(struct ws_transport *t, int rv, unsigned code, const char *what);
void tether__ws_ib_consume(struct ws_transport *t, size_t n);
/* The transport's readv and writev in the open phase. */
int tether__ws_readv(struct tether_transport *tr, const struct iovec *iov, int iovcnt,
                     size_t *nread);
int tether__ws_writev(struct tether_transport *tr, const struct iovec *iov, int iovcnt,
                      size_t *nwritten);

#endif /* TETHER_WS_INT_H */
