/* SPDX-License-Identifier: MIT */
/* Releasing the OpenSSL buffers of idle TLS connections. OpenSSL keeps a
 * read and a write buffer of some 17 KiB each per connection; releasing
 * them after every record (SSL_MODE_RELEASE_BUFFERS) costs an allocation
 * and a free per record on each side, keeping them costs an idle server
 * that memory per connection. The middle way: buffers stay while a
 * connection is busy and go once it has been idle for a while.
 *
 * Each loop keeps one list (an array: the transports know their slot) of
 * its TLS transports that may hold buffers, made with its first TLS
 * transport and freed with the loop. A transport leaves its handshake, and
 * every release, in SSL_MODE_RELEASE_BUFFERS: OpenSSL frees each buffer
 * as soon as it is empty. Its first read or write after that puts it on
 * the list (TF_BUF_LISTED), on probation; its second one, which on a
 * connection that is only answered now and then is the reply, marks it
 * busy (TF_BUF_USED) and clears the mode after it has run, so buffers stay
 * from the third call on. Only calls that moved data count: a read that
 * found only the server's session tickets, or nothing, is not a message.
 * Kept from the first call, a request and its reply left buffers on every
 * such connection until the sweep: on a server of 10 000 connections that
 * each send one message, some 80 MB of memory touched for the first time
 * on each side, and answering them all took nearly three times as long as
 * with the buffers released at once (tests/bench conns tls). The touch
 * after each call tests both bits: no clock read, no list move. One loop timer, armed while the list is not
 * empty, sweeps it every TETHER__TLS_IDLE_MS: a busy transport loses the
 * bit and stays (its next call sets it again); one that was not busy
 * since the previous sweep (idle for at least one period, at most two,
 * or used once) goes back to SSL_MODE_RELEASE_BUFFERS, gets
 * SSL_free_buffers() and leaves the list. SSL_free_buffers() refuses, and
 * the transport stays for the next sweep, while the buffers hold data
 * (records read ahead, a record not yet written); the mode frees them
 * once that is gone. A sweep costs O(transports on the list), that is of
 * connections used within the last two periods, once per period; idle
 * connections cost nothing: no timer of their own and no list node beyond
 * 3 bytes in the transport.
 *
 * The same per-loop state holds the loop's one socket BIO (tls_bio.c),
 * which all its TLS transports share: a BIO of their own would cost each
 * connection some 200 bytes (the BIO and its lock). OpenSSL reaches the
 * socket only from inside the calls the transport makes, so the transport
 * points the BIO at itself (tether__tls_bind) before each call that may do
 * I/O or run a callback: the handshake, SSL_read/peek/write/shutdown.
 *
 * Thread rule: a loop's list and BIO are touched only from that loop's
 * thread (its transports' reads, writes and destruction, and its timer). */
#include "tls_transport.h"

#include <stdlib.h>

#include <openssl/err.h>

#include "loop.h"

static const char tls_idle_key; /* its address identifies the loop's list */

struct tls_idle {
    struct tls_loop l; /* first: the loop's socket BIO and its current transport */
    struct tether__loop_ext ext;
    tether_loop *loop;
    struct tether__tnode timer; /* the sweep, armed while n > 0 */
    struct tls_transport **v;   /* the transports that may hold buffers */
    uint32_t n;
    uint32_t cap;
};

static void tls_idle_cleanup(tether_loop *loop, struct tether__loop_ext *ext)
{
    struct tls_idle *d = tether__container_of(ext, struct tls_idle, ext);
    tether__tnode_stop(loop, &d->timer);
    /* Connections are freed before their loop: nothing is listed now, and
     * the BIO has no other reference. */
    BIO_free(d->l.bio);
    free(d->v);
    free(d);
}

/* A transport's position in the list (24 bits, in two fields: the bytes
 * free in struct tls_transport once the handshake is done). */
static inline uint32_t tls_idle_slot(const struct tls_transport *t)
{
    return t->idle_lo | (uint32_t)t->idle_hi << 16;
}

static inline void tls_idle_set_slot(struct tls_transport *t, uint32_t i)
{
    t->idle_lo = (uint16_t)i;
    t->idle_hi = (uint8_t)(i >> 16);
}

/* Takes the transport at slot i off the list: the last one moves there. */
static void tls_idle_unlink(struct tls_idle *d, uint32_t i)
{
    struct tls_transport *t = d->v[i];
    t->base.flags &= (uint16_t) ~(TF_BUF_LISTED | TF_BUF_USED);
    struct tls_transport *last = d->v[--d->n];
    d->v[i] = last;
    tls_idle_set_slot(last, i);
}

/* Releases the buffers of t if they hold nothing: true if it did.
 * SSL_has_pending() first: records read ahead but not yet decrypted. */
static bool tls_idle_release(struct tls_transport *t)
{
    return !SSL_has_pending(t->ssl) && SSL_free_buffers(t->ssl) == 1;
}

static void tls_idle_sweep(struct tether__tnode *n)
{
    struct tls_idle *d = tether__container_of(n, struct tls_idle, timer);
    uint32_t i = 0;
    while (i < d->n) {
        struct tls_transport *t = d->v[i];
        if (t->base.flags & TF_BUF_USED) {
            t->base.flags &= (uint16_t)~TF_BUF_USED;
            i++;
            continue;
        }
        SSL_set_mode(t->ssl, SSL_MODE_RELEASE_BUFFERS);
        if (tls_idle_release(t)) {
            tls_idle_unlink(d, i); /* the last one moved to i: look at it next */
        } else {
            i++; /* data in the buffers: try again at the next sweep */
        }
    }
    if (d->n > 0) {
        tether__tnode_start(d->loop, &d->timer, TETHER__TLS_IDLE_MS);
    } else {
        /* The loop's busy connections have all gone idle: give the array
         * back too. */
        free(d->v);
        d->v = NULL;
        d->cap = 0;
    }
}

struct tls_idle *tether__tls_idle_get(tether_loop *loop)
{
    struct tether__loop_ext *e = tether__loop_ext_find(loop, &tls_idle_key);
    if (e != NULL) {
        return tether__container_of(e, struct tls_idle, ext);
    }
    BIO_METHOD *m = tether__tls_bio_method();
    struct tls_idle *d = calloc(1, sizeof *d);
    if (d != NULL && m != NULL) {
        d->l.bio = BIO_new(m);
    }
    if (d == NULL || d->l.bio == NULL) {
        ERR_clear_error();
        free(d);
        return NULL;
    }
    d->ext.key = &tls_idle_key;
    d->ext.cleanup = tls_idle_cleanup;
    d->loop = loop;
    BIO_set_data(d->l.bio, &d->l);
    tether__tnode_init(&d->timer, tls_idle_sweep);
    tether__loop_ext_add(loop, &d->ext);
    return d;
}

static void tls_idle_add(struct tls_transport *t)
{
    struct tls_idle *d = tether__tls_idle_of(t);
    if (d->n == TLS_IDLE_MAX) {
        return; /* (the slot's 24 bits: released after every call, as below) */
    }
    if (d->n == d->cap) {
        uint32_t cap = d->cap != 0 ? d->cap * 2 : 64;
        struct tls_transport **v = realloc(d->v, cap * sizeof *v);
        if (v == NULL) {
            return; /* unlisted, in SSL_MODE_RELEASE_BUFFERS until an attempt succeeds */
        }
        d->v = v;
        d->cap = cap;
    }
    tls_idle_set_slot(t, d->n);
    d->v[d->n++] = t;
    t->base.flags |= TF_BUF_LISTED;
    if (!tether__tnode_active(&d->timer)) {
        tether__tnode_start(d->loop, &d->timer, TETHER__TLS_IDLE_MS);
    }
}

void tether__tls_idle_note(struct tls_transport *t)
{
    if (!(t->base.flags & TF_BUF_LISTED)) {
        tls_idle_add(t); /* probation: the mode freed what this call used */
        return;
    }
    t->base.flags |= TF_BUF_USED;
    SSL_clear_mode(t->ssl, SSL_MODE_RELEASE_BUFFERS);
}

void tether__tls_idle_remove(struct tls_transport *t)
{
    if (t->base.flags & TF_BUF_LISTED) {
        struct tls_idle *d = tether__tls_idle_of(t);
        tls_idle_unlink(d, tls_idle_slot(t));
        if (d->n == 0) {
            tether__tnode_stop(d->loop, &d->timer);
        }
    }
}

void tether__tls_idle_hs_done(struct tls_transport *t)
{
    /* The handshake ran with SSL_MODE_RELEASE_BUFFERS (transport_tls.c),
     * and the mode stays until the connection is busy. A server's
     * handshake ends with its last flight written and nothing read beyond
     * the client's Finished, unless the client's first data came with it
     * (the mode frees that buffer once it is read): most connections start
     * without buffers. */
    (void)tls_idle_release(t);
}

bool tether__tls_holds_buffers(const struct tether_transport *tr)
{
    struct tls_transport *t;
    return tether__tls_transport_get(tr, &t) == TETHER_OK && (t->base.flags & TF_BUF_LISTED) != 0;
}

bool tether__tls_keeps_buffers(const struct tether_transport *tr)
{
    struct tls_transport *t;
    return tether__tls_transport_get(tr, &t) == TETHER_OK &&
           (SSL_get_mode(t->ssl) & SSL_MODE_RELEASE_BUFFERS) == 0;
}
