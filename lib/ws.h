/* SPDX-License-Identifier: MIT */
/* Internal side of WebSocket (see include/tether/ws.h): the frame codec
 * (ws_frame.c), the HTTP/1.1 upgrade (ws_handshake.c), the transport
 * layer that runs the upgrade over the connection's TCP or TLS transport
 * and then passes frames through (transport_ws.c, ws_write.c), and the
 * connection's side (conn_ws.c, conn_ws_read.c).
 *
 * Once open, the connection speaks WebSocket itself (message mode): each
 * message is one WebSocket frame in its queue, and its parser delivers
 * each frame's payload. tether control frames become pings, pongs and the
 * close code for other peers, and travel in frames of their own between
 * tether ends (TETHER__WS_EXT_CTRL). */
#ifndef TETHER_WS_INT_H
#define TETHER_WS_INT_H

#include "conn.h"
#include "frame.h"

#include <string.h>

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

/* tether__ws_mask_copy() at payload offset 0, inline for the small
 * payloads of most frames (dst may be src; the key must not overlap dst). */
typedef uint32_t tether__ws_v128 __attribute__((vector_size(16))); /* SSE2 on x86-64 */
static inline void tether__ws_mask_small(uint8_t *dst, const uint8_t *src, size_t n,
                                         const uint8_t key[4])
{
    uint32_t k;
    memcpy(&k, key, 4);
    /* (Four 32-bit lanes: one load and one shuffle make the key vector.) */
    tether__ws_v128 kv = {k, k, k, k};
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        tether__ws_v128 a, b, c, d;
        memcpy(&a, src + i, 16);
        memcpy(&b, src + i + 16, 16);
        memcpy(&c, src + i + 32, 16);
        memcpy(&d, src + i + 48, 16);
        a ^= kv;
        b ^= kv;
        c ^= kv;
        d ^= kv;
        memcpy(dst + i, &a, 16);
        memcpy(dst + i + 16, &b, 16);
        memcpy(dst + i + 32, &c, 16);
        memcpy(dst + i + 48, &d, 16);
    }
    if ((n & 63u) == 0) {
        return;
    }
    /* The rest by its bits, largest first (i stays a multiple of 4 until
     * the last 3 bytes, so the key stays in phase). */
    if (n & 32u) {
        tether__ws_v128 a, b;
        memcpy(&a, src + i, 16);
        memcpy(&b, src + i + 16, 16);
        a ^= kv;
        b ^= kv;
        memcpy(dst + i, &a, 16);
        memcpy(dst + i + 16, &b, 16);
        i += 32;
    }
    if (n & 16u) {
        tether__ws_v128 a;
        memcpy(&a, src + i, 16);
        a ^= kv;
        memcpy(dst + i, &a, 16);
        i += 16;
    }
    if (n & 8u) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= (uint64_t)k | ((uint64_t)k << 32);
        memcpy(dst + i, &v, 8);
        i += 8;
    }
    if (n & 4u) {
        uint32_t v;
        memcpy(&v, src + i, 4);
        v ^= k;
        memcpy(dst + i, &v, 4);
        i += 4;
    }
    if (n & 3u) {
        dst[i] = src[i] ^ key[0];
        if ((n & 3u) > 1) {
            dst[i + 1] = src[i + 1] ^ key[1];
            if ((n & 3u) > 2) {
                dst[i + 2] = src[i + 2] ^ key[2];
            }
        }
    }
}

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

/* ---- conn_ws.c: the connection's side --------------------------------- */

/* Wraps c->tr (just created for fd) in the WebSocket layer; on servers
 * arms the handshake deadline. */
int tether__ws_wrap(tether_conn *c, bool server);

/* The connection's timer fired during the handshake: fails it naming
 * the WebSocket phase. Returns false when the WebSocket layer is not the
 * one waiting (the TLS handshake of a client). */
bool tether__ws_handshake_timeout(tether_conn *c);

/* A read failed: when it was the peer breaking the protocol, closes the
 * connection gracefully (our close frame is out: flush, FIN, linger) so
 * that the peer reads the close code instead of a reset, and returns
 * true. */
bool tether__ws_read_failed(tether_conn *c, int rv);

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

/* Message mode. Once the upgrade is done (tether__ws_open()), the
 * connection hands whole messages to the layer instead of writing len32
 * frames: tether__ws_send() queues one WebSocket frame per message (the
 * header, then the payload copied, or masked while copied on clients),
 * tether__ws_queue_ctrl() turns a tether control frame into what the peer
 * understands, and the transport passes the queue through unchanged. On
 * reading, the connection's parser hands its input to tether__ws_parse(),
 * which unmasks each complete frame in place and delivers it. What was
 * queued before the upgrade finished is len32 and is translated on its
 * way out (ws_write.c). */
static inline bool tether__ws_open(const tether_conn *c);

/* (tether__ws_send(), for tether_conn_send(): conn_ws.h.) */

/* Queues the tether control frame in iov (whole, total bytes) on an open
 * WebSocket connection. */
int tether__ws_queue_ctrl(tether_conn *c, const struct iovec *iov, int n, size_t total);

/* Queues one whole frame (a control payload of at most 125 bytes) behind
 * what the connection has queued. */
int tether__ws_queue_frame(tether_conn *c, uint8_t op, const uint8_t *p, size_t n);

/* ---- conn_ws_read.c: frames in ---------------------------------------- */

/* The connection's parser for an open WebSocket connection: delivers the
 * complete frames at the start of buf (unmasking them in place: buf is
 * the connection's own input buffer) and returns the bytes consumed;
 * *known as for the len32 parser (conn_read.c). */
size_t tether__ws_parse(tether_conn *c, uint8_t *buf, size_t len, size_t *known);

/* ---- transport_ws.c: the layer --------------------------------------- */

/* The transport under the WebSocket layer when tr is one (for the TLS
 * accessors of wss:// connections), else tr itself. */
const struct tether_transport *tether__ws_inner(const struct tether_transport *tr);

/* A loop's pool of random bytes for masking keys (ws_write.c). */
#define TETHER__WS_RND_POOL 4096u
struct tether__ws_rnd {
    uint8_t rnd[TETHER__WS_RND_POOL];
    size_t off;                    /* TETHER__WS_RND_POOL: used up */
    struct evp_cipher_ctx_st *ctr; /* the keystream's cipher (EVP_CIPHER_CTX) */
    unsigned uses;                 /* pools drawn under its key */
    uint8_t *shared_ob;            /* the loop's encoding buffer for len32 output, or NULL */
    uint8_t *chunk;                /* where lazy payloads are masked on their way out, or NULL */
    /* What of chunk the socket did not take (ws_write.c): the masked
     * bytes chunk[chunk_off..+chunk_n) of the payload byte at chunk_src,
     * kept for the layer chunk_t (NULL: nothing kept), masked with
     * chunk_key. */
    const void *chunk_t;
    const uint8_t *chunk_src;
    size_t chunk_off, chunk_n;
    uint8_t chunk_key[4];
    void *spare; /* a staging block for large client frames (conn_ws.c) */
    struct tether__loop_ext ext;
};
struct tether__ws_rnd *tether__ws_rnd_get(tether_loop *loop);
void tether__ws_rnd_refill(struct tether__ws_rnd *r);

#define TETHER__WS_MB_KEEP (64u * 1024u) /* reassembly buffer kept between messages */
#define TETHER__WS_OB_MAX (256u * 1024u) /* encoded output accepted ahead of the socket */

/* A payload masked on its way out rather than when queued: a client's
 * large zero-copy message, whose caller keeps it unchanged until it is
 * released. Each pass over a payload larger than the caches costs a trip
 * to memory; masked a chunk at a time into a small buffer, each chunk is
 * still in the cache when the kernel copies it. The queue holds the
 * caller's bytes by reference, and the layer knows them by address. */
struct tether__ws_lazy {
    const uint8_t *p; /* the caller's payload */
    size_t len;
    size_t done; /* bytes written */
    uint8_t key[4];
};

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
    struct tether__ws_rnd *rnd; /* the loop's masking keys */
    const struct tether__ws_cfg *cfg;
    bool server;
    bool tctl; /* TETHER__WS_EXT_CTRL agreed: the peer is tether */
    uint8_t phase;
    int fail_rv; /* TETHER__WS_REJECT: the error to return once the answer is out */
    /* Called once the upgrade is done (conn_ws.c). */
    void (*on_open)(struct ws_transport *t, void *ud);
    void *open_ud;
    struct ws_transport **owner; /* cleared when the layer is destroyed */

    /* Input read with the handshake, not yet handed over (the frames a
     * peer sent right behind it; first, for peers without the extension,
     * a HELLO in a frame of the extension's form). */
    uint8_t *ib;
    size_t ioff, ilen, icap;
    bool hello_synth; /* that HELLO has not been parsed yet */

    /* Reading (conn_ws_read.c): the fragmented message under way, its
     * type and UTF-8 state. */
    bool in_msg;
    uint8_t msg_op;
    uint32_t utf8;
    uint8_t *mb;
    size_t mlen, mcap;
    bool cur_text; /* the message being delivered is text */

    /* Encoded output not yet taken by the inner transport; during
     * writev, the loop's shared buffer (ob_shared, ws_write.c). */
    uint8_t *ob;
    size_t ooff, olen, ocap;
    bool ob_shared;
    bool stext; /* message mode: data frames are sent as text */
    /* Translation of the len32 bytes queued before the upgrade (legacy:
     * how many are still to come). */
    size_t legacy;
    uint8_t whdr[4];
    uint8_t whave;
    uint64_t wleft; /* payload bytes of the current item still to come */
    uint64_t wpos;  /* position within a data frame (for the mask) */
    uint8_t wctrl;  /* the tether control frame type in progress, 0: data */
    uint8_t wcbuf[TETHER__CTRL_GOAWAY_MIN + TETHER__CTRL_GOAWAY_TEXT_MAX];
    size_t wclen;
    uint8_t wmask[4];
    bool text; /* (translation) data frames are sent as text */

    /* A client's large zero-copy payloads in the connection's queue, in
     * queue order: masked a chunk at a time as they are written
     * (ws_write.c). A ring of lz_cap entries, NULL when empty. */
    struct tether__ws_lazy *lz;
    uint32_t lz_head, lz_n, lz_cap;

    /* Reading: payload bytes of the incomplete data frame at the start of
     * the input already unmasked (conn_ws_read.c). */
    size_t rx_unmasked;

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
    int rx_code;   /* tether_ws_close_code() */
    int tx_code;   /* chosen by tether_ws_close() or a GOAWAY; 0: default */
    char tx_reason[TETHER__WS_REASON_MAX + 1];
    char rx_text[TETHER__WS_REASON_MAX + 1];
    char err[TETHER_ERROR_MSG_MAX];
    char eof_detail[TETHER_ERROR_MSG_MAX];
};

static inline bool tether__ws_open(const tether_conn *c)
{
    return tether__conn_ws(c)->phase == TETHER__WS_OPEN;
}

/* Private control types the connection's queue carries to the layer only
 * (tether_ws_set_text() before the upgrade); never on the wire. */
#define TETHER__WS_MARK_BINARY 0xF0u
#define TETHER__WS_MARK_TEXT 0xF1u

/* A fresh masking key from the loop's pool of OpenSSL random bytes. */
static inline void tether__ws_mask_key(struct ws_transport *t, uint8_t key[4])
{
    struct tether__ws_rnd *r = t->rnd;
    if (TETHER__UNLIKELY(r->off + 4 > TETHER__WS_RND_POOL)) {
        tether__ws_rnd_refill(r);
    }
    memcpy(key, r->rnd + r->off, 4);
    r->off += 4;
}

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
/* Encodes one whole frame (a control frame of at most 125 bytes, masked
 * on clients) into out (TETHER__WS_HDR_MAX + n bytes); returns its
 * length. */
size_t tether__ws_frame_encode(struct ws_transport *t, uint8_t *out, uint8_t op, const uint8_t *p,
                               size_t n);
/* Queues one whole frame in ob (control frames, the close frame). */
int tether__ws_ob_frame(struct ws_transport *t, uint8_t op, const uint8_t *p, size_t n);
/* The loop's masking buffer (TETHER__WS_CHUNK bytes), allocated on first
 * use; NULL when out of memory. Whoever writes into it takes it from a
 * layer's kept chunk (chunk_t). 1 MiB: with 64 KiB chunks a 1 MiB message
 * took 16 writes and woke the reader for each (23 reads per message
 * there), and `compare` put ws at 0.64x tcp's msgs/s against 1.15x with
 * 1 MiB chunks in the same run, although the smaller chunk stays in the
 * cache: the system calls and wake-ups cost more than the cache misses. */
#define TETHER__WS_CHUNK (1024u * 1024u)
uint8_t *tether__ws_chunk_get(struct tether__ws_rnd *r);
/* Records p[0..len) (queued next, by reference) as a payload to mask with
 * key on its way out. Returns TETHER_OK or TETHER_ENOMEM. */
int tether__ws_lazy_add(struct ws_transport *t, const uint8_t *p, size_t len, const uint8_t key[4]);
/* Forgets all of them (the layer is destroyed). */
void tether__ws_lazy_forget(struct ws_transport *t);
/* Forgets the payload recorded last (its queueing failed). */
void tether__ws_lazy_drop_last(struct ws_transport *t);
/* Writes what ob holds to the inner transport. */
int tether__ws_ob_flush(struct ws_transport *t);
/* Records the detail of a failure and returns rv. */
int tether__ws_fail(struct ws_transport *t, int rv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The close frame's code and reason for a GOAWAY reason (the first one
 * chosen stays). */
void tether__ws_set_close(struct ws_transport *t, unsigned reason, const char *text, size_t tl);
/* The transport's writev in the open phase (ws_write.c). */
int tether__ws_writev(struct tether_transport *tr, const struct iovec *iov, int iovcnt,
                      size_t *nwritten);
/* Creates the layer over in (not yet attached to a connection). */
int tether__ws_transport_new(struct ws_transport **out, struct tether_transport *in,
                             tether_loop *loop, const struct tether__ws_cfg *cfg, bool server);

#endif /* TETHER_WS_INT_H */
